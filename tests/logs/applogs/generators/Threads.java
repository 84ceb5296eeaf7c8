import java.util.concurrent.*;
import org.slf4j.*;

/** The same warning and error logged from several threads (main, a pool's, the common fork-join pool's, one named
 * with a level word), for pattern layouts that print the thread's name after the level. */
public class Threads {
  static final Logger log = LoggerFactory.getLogger("com.shop.OrderService");
  static void work(int n) {
    log.warn("slow query {} ms", 100 + n);
    log.error("payment failed for order {}", n);
  }
  public static void main(String[] a) throws Exception {
    work(1);
    ExecutorService pool = Executors.newFixedThreadPool(2);
    for (int k = 2; k < 4; k++) { final int n = k; pool.submit(() -> work(n)).get(); }
    pool.shutdown();
    CompletableFuture.runAsync(() -> work(4)).get();
    Thread t = new Thread(() -> work(5), "error-reporter");
    t.start(); t.join();
  }
}
