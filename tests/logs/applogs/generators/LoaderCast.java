import java.util.function.Supplier;

/** ClassCastExceptions whose message names the class loader of a class by its identity hash code (``of loader
 * LoaderCast$Loader @4e0e2f2a``): the class is defined anew in fresh loaders until one's hash code has fewer than eight
 * hex digits; the exception of the first loader and of that one are printed. */
public class LoaderCast {
  public static class Thing { }
  static class Loader extends ClassLoader {
    Loader() { super(null); }
    Class<?> define(byte[] b) { return defineClass("LoaderCast$Thing", b, 0, b.length); }
  }
  public static void main(String[] a) throws Exception {
    byte[] bytes = LoaderCast.class.getResourceAsStream("LoaderCast$Thing.class").readAllBytes();
    for (int i = 0; ; i++) {
      Loader l = new Loader();
      Object o = l.define(bytes).getDeclaredConstructor().newInstance();
      boolean isShort = Integer.toHexString(System.identityHashCode(l)).length() < 8;
      if (i == 0 || isShort) {
        try { Supplier<?> s = (Supplier<?>) o; } catch (ClassCastException e) { e.printStackTrace(); }
      }
      if (isShort) break;
    }
  }
}
