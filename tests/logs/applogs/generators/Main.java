import java.util.*;
public class Main {
  static void load(int id) { throw new IllegalStateException("order " + id + " not found in shard 0x7f3a"); }
  static void handle(int id) { try { load(id); } catch (IllegalStateException e) { throw new RuntimeException("request failed", e); } }
  public static void main(String[] a) throws Exception {
    if (a.length > 0) { try { handle(1); } catch (RuntimeException e) { e.printStackTrace(); } try { Object o = null; o.toString(); } catch (Exception e) { e.printStackTrace(); } return; }
    Thread t = new Thread(() -> handle(42), "worker-1"); t.start(); t.join();
    handle(7);
  }
}
