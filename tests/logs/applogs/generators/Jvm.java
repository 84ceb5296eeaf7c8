// Two JVM loggers' JSON: log4j2's JsonLayout (log4j API) and logback + logstash-logback-encoder (SLF4J), the
// same chain (a RuntimeException around an IllegalStateException whose message has two lines) twice each
public class Jvm {
  static final org.apache.logging.log4j.Logger l4j = org.apache.logging.log4j.LogManager.getLogger(Jvm.class);
  static final org.slf4j.Logger lb = org.slf4j.LoggerFactory.getLogger(Jvm.class);
  static void load(int id) { throw new IllegalStateException("order " + id + " not found\nin shard " + (id * 7)); }
  public static void main(String[] a) {
    for (int id = 1; id <= 2; id++) {
      try { try { load(id); } catch (IllegalStateException e) { throw new RuntimeException("request " + id + " failed\nattempt " + id, e); } }
      catch (RuntimeException e) {
        if (a[0].equals("log4j2")) l4j.error("request failed", e); else lb.error("request failed", e);
      }
    }
  }
}
