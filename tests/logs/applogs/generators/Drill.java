import java.util.logging.*;
public class Drill {
  static final Logger LOG = Logger.getLogger("shop.Orders");
  static void load(int id) { throw new IllegalStateException("order " + id + " not found in shard 0x7f3a" + id); }
  static void handle(int id) { try { load(id); } catch (RuntimeException e) { throw new RuntimeException("request " + id + " failed", e); } }
  static class Res implements AutoCloseable { int id; Res(int i){id=i;} public void close() throws java.io.IOException { throw new java.io.IOException("close failed for conn " + id); } }
  public static void main(String[] a) throws Exception {
    for (int id = 1; id <= 2; id++) {
      try { handle(id); } catch (RuntimeException e) { LOG.log(Level.SEVERE, "request " + id + " failed", e); }
      try (Res r = new Res(id)) { throw new java.sql.SQLException("ERROR: duplicate key value violates unique constraint \"users_email_key\"\n  Detail: Key (email)=(u" + id + "@x.org) already exists.", "23505"); }
      catch (Exception e) { LOG.log(Level.WARNING, "insert failed", e); }
      try { Object o = null; o.toString(); } catch (Exception e) { e.printStackTrace(); }
      try { handle(id); } catch (RuntimeException e) { new java.util.concurrent.CompletionException(e).printStackTrace(); }
    }
    if (a.length > 0) { int[] x = new int[2]; x[Integer.parseInt(a[0])] = 1; }
  }
}
