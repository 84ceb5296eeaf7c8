public class Chain {
  static void find(int id) { throw new IllegalStateException("order " + id + " not found"); }
  static void close(int id) throws Exception { throw new java.io.IOException("close failed " + id, new java.net.SocketException("reset " + id)); }
  public static void main(String[] a) throws Exception {
    for (int id = 1; id <= 2; id++) {
      // the cause has a suppressed exception with a cause of its own: "\tCaused by:" after "Caused by:"
      try {
        try { find(id); } catch (IllegalStateException e) {
          try { close(id); } catch (Exception s) { e.addSuppressed(s); }
          throw new RuntimeException("request " + id + " failed", e); }
      } catch (Exception e) { e.printStackTrace(); }
      // the same wrapper around another cause: another group
      try { throw new RuntimeException("request " + id + " failed", new java.sql.SQLTimeoutException("timed out after " + (id * 1000) + " ms")); }
      catch (Exception e) { e.printStackTrace(); }
    }
  }
}
