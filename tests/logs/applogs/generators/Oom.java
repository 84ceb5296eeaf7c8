import java.util.*;
/** Runs out of heap (run with -Xmx16m, and -XX:+ExitOnOutOfMemoryError: the JVM prints one line and exits). */
public class Oom { public static void main(String[] a) { List<long[]> l = new ArrayList<>(); for (;;) l.add(new long[1 << 20]); } }
