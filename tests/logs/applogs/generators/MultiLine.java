// Exceptions whose message has several lines (printed before the frames), a cause's too. Usage: java MultiLine.java N
public class MultiLine {
  public static void main(String[] a) {
    int n = Integer.parseInt(a[0]);
    try { g(n); } catch (Exception e) { e.printStackTrace(); }
    throw new IllegalStateException("order " + n + " failed\nline2 of order " + n + "\nline3");
  }
  static void f(int n) { throw new IllegalStateException("bad state " + n + "\nsecond line\n\nafter blank"); }
  static void g(int n) {
    try { f(n); } catch (Exception e) { throw new RuntimeException("wrapper " + n + "\nmore", e); }
  }
}
