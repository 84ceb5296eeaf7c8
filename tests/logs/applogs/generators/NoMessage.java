import java.util.*;
import org.slf4j.*;

/** An exception without a message (a ConcurrentModificationException), logged by logback (``…Exception: null``) and
 * then uncaught (the JVM prints the class alone). */
public class NoMessage {
  static final Logger log = LoggerFactory.getLogger("com.shop.Cart");
  static void prune(List<Integer> l) { for (Integer i : l) { if (i == 1) l.remove(i); } }
  public static void main(String[] a) {
    try { prune(new ArrayList<>(List.of(1, 2, 3))); } catch (RuntimeException e) { log.error("prune failed", e); }
    prune(new ArrayList<>(List.of(1, 2, 3)));
  }
}
