import org.slf4j.*;
public class App {
  static final Logger log = LoggerFactory.getLogger(App.class);
  static void load(int id) { throw new IllegalStateException("order " + id + " not found"); }
  public static void main(String[] a) {
    log.info("started on port {}", 8080);
    for (int id = 1; id <= 2; id++) {
      try { try { load(id); } catch (IllegalStateException e) { throw new RuntimeException("request " + id + " failed", e); } }
      catch (RuntimeException e) { log.error("request failed", e); }
    }
    log.warn("slow query {} ms", 1234);
  }
}
