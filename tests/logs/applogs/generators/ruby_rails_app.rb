# A Rails-like app's output, Ruby 3.1 (Debian 12): ActiveRecord 6.1 (sqlite3 in memory) raising its own
# ActiveRecord::RecordNotFound, logged by ActionDispatch::DebugExceptions through an untagged
# ActiveSupport::Logger (one FATAL record of several lines), by Logger#error(e), and uncaught exceptions with a
# cause (stderr); a NoMethodError's message holds error_highlight's code and caret.
# Usage: ruby ruby_app.rb N KIND, KIND in rails (N = 1..4), logger, uncaught, cause
require "logger"
require "active_record"
require "active_support"
require "action_dispatch"
require "action_dispatch/middleware/debug_exceptions"

ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: ":memory:")
ActiveRecord::Schema.verbose = false
ActiveRecord::Schema.define { create_table(:users) { |t| t.string :name } }
class User < ActiveRecord::Base; end

class PaymentGateway
  class Declined < StandardError; end
  def charge(order_id) = raise(Declined, "card declined for order #{order_id}")
end

def checkout(order_id)
  PaymentGateway.new.charge(order_id)
rescue PaymentGateway::Declined
  raise "checkout #{order_id} failed"
end

def show(id)
  User.find_by(id: id).name
end

n = Integer(ARGV[0])
case ARGV[1]
when "rails"
  logger = ActiveSupport::Logger.new($stdout)
  logger.formatter = ::Logger::Formatter.new
  app = lambda do |env|
    id = env["PATH_INFO"].split("/").last.to_i
    id.odd? ? User.find(id) : show(id)
    [200, {}, []]
  end
  mw = ActionDispatch::DebugExceptions.new(app)
  env = Rack::MockRequest.env_for("/users/#{n + 2}")
  env["action_dispatch.logger"] = logger
  env["action_dispatch.show_exceptions"] = true
  env["action_dispatch.show_detailed_exceptions"] = false
  logger.info("Started GET \"/users/#{n + 2}\" for 127.0.0.1")
  begin
    mw.call(env)
  rescue StandardError
  end
when "logger"
  log = Logger.new($stdout)
  begin
    User.find(n + 4)
  rescue => e
    log.error(e)
  end
  begin
    checkout(n)
  rescue => e
    log.error(e)
  end
when "uncaught"
  show(n)
when "cause"
  checkout(n)
end
