# Sidekiq 6.4 (Debian's ruby-sidekiq, Ruby 3.1): its job logger and default error handler, as its processor runs them
# around a job (no Redis needed for that part): "start", the job's exception, "fail", then the handler's three warnings
# (the job as JSON, the exception's class and message, its backtrace). ruby sidekiq_jobs.rb [json] > FILE
require "sidekiq"
require "sidekiq/job_logger"
require "sidekiq/exception_handler"
require "json"
require "securerandom"

Sidekiq.logger = Sidekiq::Logger.new($stdout)
Sidekiq.logger.formatter = Sidekiq::Logger::Formatters::JSON.new if ARGV[0] == "json"

class PaymentGateway
  class Declined < StandardError; end
  def self.charge(order) = raise(Declined, "card for order #{order} declined")
end

class ChargeJob
  def perform(order) = PaymentGateway.charge(order)
end

class Runner
  include Sidekiq::ExceptionHandler

  def run(n)
    item = {"class" => "ChargeJob", "jid" => SecureRandom.hex(12), "args" => [n], "queue" => "default"}
    logger = Sidekiq::JobLogger.new
    logger.prepare(item) do
      logger.call(item, "default") { ChargeJob.new.perform(n) }
    rescue => e
      handle_exception(e, {context: "Job raised exception", job: item, jobstr: JSON.dump(item)})
    end
  end
end

[17, 18].each { |n| Runner.new.run(n) }
Sidekiq.logger.info("idle")
