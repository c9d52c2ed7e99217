package crayfish.streams;

/** Python's text forms, so detail strings read exactly as the Python workers write them. */
final class Py {
    private Py() {
    }

    /** repr(str). */
    static String repr(String s) {
        char q = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder b = new StringBuilder(s.length() + 2).append(q);
        for (int i = 0; i < s.length(); ) {
            int c = s.codePointAt(i);
            i += Character.charCount(c);
            if (c == q || c == '\\') {
                b.append('\\').appendCodePoint(c);
            } else if (c == '\n') {
                b.append("\\n");
            } else if (c == '\r') {
                b.append("\\r");
            } else if (c == '\t') {
                b.append("\\t");
            } else if (c < 0x20 || c == 0x7f) {
                b.append(String.format("\\x%02x", c));
            } else if (!printable(c)) {
                b.append(c <= 0xff ? String.format("\\x%02x", c)
                        : c <= 0xffff ? String.format("\\u%04x", c) : String.format("\\U%08x", c));
            } else {
                b.appendCodePoint(c);
            }
        }
        return b.append(q).toString();
    }

    private static boolean printable(int c) {
        int t = Character.getType(c);
        return !(t == Character.CONTROL || t == Character.FORMAT || t == Character.UNASSIGNED
                || t == Character.SURROGATE || t == Character.PRIVATE_USE || t == Character.LINE_SEPARATOR
                || t == Character.PARAGRAPH_SEPARATOR || (t == Character.SPACE_SEPARATOR && c != ' '));
    }

    /** str(tuple) of ints: (), (5,), (1, 784). */
    static String tuple(long[] xs) {
        if (xs.length == 1) {
            return "(" + xs[0] + ",)";
        }
        StringBuilder b = new StringBuilder("(");
        for (int i = 0; i < xs.length; i++) {
            b.append(i == 0 ? "" : ", ").append(xs[i]);
        }
        return b.append(')').toString();
    }

    /** str(list) of ints: [], [1, 1, 783]. */
    static String list(long[] xs) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < xs.length; i++) {
            b.append(i == 0 ? "" : ", ").append(xs[i]);
        }
        return b.append(']').toString();
    }

    /** str(list) of strings: ['a', 'b']. */
    static String strList(Iterable<String> xs) {
        StringBuilder b = new StringBuilder("[");
        for (String x : xs) {
            b.append(b.length() == 1 ? "" : ", ").append(repr(x));
        }
        return b.append(']').toString();
    }

    /** s[:n] by code points. */
    static String head(String s, int n) {
        if (s.length() <= n) {
            return s;
        }
        int cps = s.codePointCount(0, s.length());
        return cps <= n ? s : s.substring(0, s.offsetByCodePoints(0, n));
    }
}
