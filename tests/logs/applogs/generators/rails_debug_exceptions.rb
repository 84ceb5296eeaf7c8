# ActionDispatch::DebugExceptions (actionpack) logging an exception as Rails production does: a tagged
# logger (config.log_tags = [:request_id]) with ::Logger::Formatter (config.log_formatter)
require "logger"
require "active_support"
require "active_support/tagged_logging"
require "action_dispatch"
require "action_dispatch/middleware/debug_exceptions"

class RecordNotFound < StandardError; end
logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new($stdout))
logger.formatter = ::Logger::Formatter.new
logger.formatter.extend(ActiveSupport::TaggedLogging::Formatter)
app = ->(env) { raise RecordNotFound, "Couldn't find User with 'id'=#{env['PATH_INFO'].split('/').last}" }
mw = ActionDispatch::DebugExceptions.new(app)
%w[1 2].each do |id|
  env = Rack::MockRequest.env_for("/users/#{id}")
  env["action_dispatch.logger"] = logger
  env["action_dispatch.show_exceptions"] = true
  env["action_dispatch.show_detailed_exceptions"] = false
  rid = "4f1c2a9e-77b0-4c1e-9a3d-#{id * 12}"
  logger.tagged(rid) do
    logger.info("Started GET \"/users/#{id}\" for 127.0.0.1")
    begin
      mw.call(env)
    rescue RecordNotFound
    end
  end
end
