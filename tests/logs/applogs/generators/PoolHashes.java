import java.util.concurrent.*;
import org.slf4j.*;

/** The same exception thrown by a thread pool's threads for several objects, their default toString() in its message
 * (``PoolHashes$Order@1b6d3586``: the identity hash code in hex, one to eight digits), logged by logback's pattern
 * layout until both a hash code of eight digits and a shorter one were logged; then one of another type, and the same
 * one uncaught in two pool threads (the default handler prints it to stderr). */
public class PoolHashes {
  static final Logger log = LoggerFactory.getLogger("com.shop.OrderService");
  static class Order { }
  static void lock(Order o) { throw new IllegalStateException("order " + o + " is locked by " + Thread.currentThread().getName()); }
  public static void main(String[] a) throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(3);
    boolean shortSeen = false, longSeen = false;
    for (int k = 0; !(shortSeen && longSeen) || k < 3; k++) {
      Order o = new Order();
      int digits = Integer.toHexString(o.hashCode()).length();
      if (digits < 8 ? shortSeen : longSeen) continue;  // one object of each kind is logged
      shortSeen |= digits < 8; longSeen |= digits == 8;
      final int n = k;
      pool.submit(() -> { try { lock(o); } catch (RuntimeException e) { log.error("job {} failed", n, e); } }).get();
    }
    pool.submit(() -> { try { throw new IllegalArgumentException("bad amount -5 for " + new Order()); }
                        catch (RuntimeException e) { log.error("refund failed", e); } }).get();
    for (int k = 0; k < 2; k++) { pool.execute(() -> lock(new Order())); Thread.sleep(100); }
    pool.shutdown();
    pool.awaitTermination(10, TimeUnit.SECONDS);
  }
}
