require 'logger'
log = Logger.new($stdout)
log.info("started")
def find(id) = raise(ActiveRecordNotFound, "Couldn't find User with 'id'=#{id}")
class ActiveRecordNotFound < StandardError; end
[1, 2].each do |id|
  begin
    find(id)
  rescue => e
    log.error(e)
    log.error("#{e.message} (#{e.class})\n" + e.backtrace.join("\n"))
  end
end
begin
  nil.upcase
rescue => e
  log.fatal(e)
end
log.warn("slow query 1234 ms")
nil.upcase
