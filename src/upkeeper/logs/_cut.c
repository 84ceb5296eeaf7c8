/* upkeeper.logs._cut: the line cut of the vectorized access-log path, in one pass over a buffer.
 *
 * cut(buf, prog, anchors) does what upkeeper.logs.arrowscan.ArrowScanner's pyarrow cut does with four
 * kernels (split the buffer into lines; keep the lines matching the format's strict RE2 pattern; cut each
 * kept line on '"' and a segment on ' '; take each field), for a pattern given as a *program* that
 * arrowscan.cut_program derived from the same format:
 *
 *   'L' u16 n  n bytes                            a literal
 *   'R' 32-byte class bitmap  u32 min  u32 max  u8 flags   a run of class bytes, greedy
 *
 * A greedy run is exact because cut_program only emits a run of variable length when what follows it
 * (a literal's first byte, or the end of the line) cannot be in its class: a regex engine could not end
 * the run anywhere else.  flags: 1 first byte not ' ', 2 last byte neither ' ' nor '\\', 4 last byte
 * not ',', 8 not exactly ":" (arrowscan's _QUOTED, _UNQ_LIST and the skipped value after a list).
 *
 * anchors: per field, (k1, o1, k2, o2): the field runs from o1 bytes after the start of element k1 to o2
 * bytes after the start of element k2 (k2 = the number of elements: the end of the line) in a line the
 * program matched (arrowscan.cut_anchors finds them: in a matched line, quotes and the blanks outside
 * quotes come from literals only, so where the pyarrow cut puts each field is fixed by the elements).
 *
 * Returns (n, valid, n_ok, rejected, starts, columns):
 *   n         lines in buf (buf ends with '\n'; the empty text after the last one is not a line)
 *   valid     the kept lines as an Arrow validity bitmap (bytes, LSB first)
 *   n_ok      how many were kept
 *   rejected  the other lines (a list of bytes, without their '\n'), in order
 *   starts    int64 offsets of the n lines' starts, then len(buf) (bytes)
 *   columns   per field, (offsets, data): an Arrow large_binary column's int64 offsets and its data
 *             (a rejected line's value is empty: its validity bit is 0)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Is the buffer at ``p`` aligned for reading ``a``-byte integers in place?  Arrow's buffers and bytes objects are;
 * a buffer that is not (a memoryview sliced at an odd offset) is refused: reading it would be undefined behaviour. */
static int aligned(const void *p, size_t a) {
    return ((uintptr_t)p & (a - 1)) == 0;
}

#define MAX_ELEMS 256
#define MAX_STOPS 8
#define MAX_FIELDS 32

typedef struct {
    int lit;                 /* 1: literal, 0: run */
    const unsigned char *text;
    Py_ssize_t len;          /* literal length */
    unsigned char cls[256];  /* run class: 1 for a member byte */
    Py_ssize_t min, max;
    int flags;
    /* a class of every byte but the control characters 0x00-0x1f and at most MAX_STOPS others (the quoted and
     * unquoted values' classes): nstops of them in stops, scanned 16 bytes at a time where SSE2 is; else -1 */
    int nstops;
    unsigned char stops[MAX_STOPS];
} Elem;

static uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int parse_prog(const unsigned char *p, Py_ssize_t n, Elem *out, int *count) {
    Py_ssize_t i = 0;
    int k = 0;
    while (i < n) {
        if (k >= MAX_ELEMS) return -1;
        Elem *e = &out[k++];
        memset(e, 0, sizeof(*e));
        if (p[i] == 'L') {
            if (i + 3 > n) return -1;
            e->lit = 1;
            e->len = p[i + 1] | (p[i + 2] << 8);
            if (i + 3 + e->len > n) return -1;
            e->text = p + i + 3;
            i += 3 + e->len;
        } else if (p[i] == 'R') {
            if (i + 1 + 32 + 9 > n) return -1;
            for (int c = 0; c < 256; c++) e->cls[c] = (p[i + 1 + (c >> 3)] >> (c & 7)) & 1;
            e->min = (Py_ssize_t)u32(p + i + 33);
            e->max = (Py_ssize_t)u32(p + i + 37);
            e->flags = p[i + 41];
            i += 42;
            /* (the vector scan stops exactly where the class does: at a control character or a stop) */
            e->nstops = 0;
            for (int c = 0; c < 256 && e->nstops >= 0; c++) {
                if (c < 0x20) {
                    if (e->cls[c]) e->nstops = -1;
                } else if (!e->cls[c]) {
                    if (e->nstops == MAX_STOPS) e->nstops = -1;
                    else e->stops[e->nstops++] = (unsigned char)c;
                }
            }
        } else {
            return -1;
        }
    }
    *count = k;
    return 0;
}

/* does the line [s, e) match the program?  starts[k]: where element k begins (starts[count]: e) */
static int match(const unsigned char *s, const unsigned char *e, const Elem *prog, int count,
                 const unsigned char **starts) {
    const unsigned char *pos = s;
    for (int k = 0; k < count; k++) {
        const Elem *el = &prog[k];
        starts[k] = pos;
        if (el->lit) {
            if (e - pos < el->len) return 0;
            for (Py_ssize_t i = 0; i < el->len; i++)  /* (short literals: cheaper than a call of memcmp) */
                if (pos[i] != el->text[i]) return 0;
            pos += el->len;
            continue;
        }
        const unsigned char *start = pos;
        const unsigned char *lim = (e - pos > el->max) ? pos + el->max : e;
        const unsigned char *cls = el->cls;
#if defined(__SSE2__)
        if (el->nstops >= 0) {  /* sixteen bytes at a time: a byte is out where it is <= 0x1f or a stop */
            const __m128i ctl = _mm_set1_epi8(0x1f);
            while (lim - pos >= 16) {
                __m128i x = _mm_loadu_si128((const __m128i *)pos);
                __m128i out = _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x);
                for (int k2 = 0; k2 < el->nstops; k2++)
                    out = _mm_or_si128(out, _mm_cmpeq_epi8(x, _mm_set1_epi8((char)el->stops[k2])));
                int m = _mm_movemask_epi8(out);
                if (m) {
                    pos += __builtin_ctz((unsigned)m);
                    break;
                }
                pos += 16;
            }
        }
#endif
        /* eight bytes at a time while all are in the class (one branch for eight), then byte by byte to the first
         * that is not */
        while (lim - pos >= 8 && (cls[pos[0]] & cls[pos[1]] & cls[pos[2]] & cls[pos[3]] & cls[pos[4]] & cls[pos[5]]
                                  & cls[pos[6]] & cls[pos[7]]))
            pos += 8;
        while (pos < lim && cls[*pos]) pos++;
        Py_ssize_t got = pos - start;
        if (got < el->min) return 0;
        if (got && el->flags) {
            unsigned char first = start[0], last = pos[-1];
            if ((el->flags & 1) && first == ' ') return 0;
            if ((el->flags & 2) && (last == ' ' || last == '\\')) return 0;
            if ((el->flags & 4) && last == ',') return 0;
            if ((el->flags & 8) && got == 1 && first == ':') return 0;
        }
    }
    starts[count] = pos;
    return pos == e;
}

static PyObject *cut(PyObject *self, PyObject *args) {
    Py_buffer buf, progbuf;
    PyObject *anchors_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O", &buf, &progbuf, &anchors_obj)) return NULL;
    PyObject *result = NULL, *rejected = NULL, *valid = NULL, *starts = NULL, *columns = NULL;
    Py_ssize_t *spans = NULL;  /* per line and field: start, end (offsets into buf) */
    Elem prog[MAX_ELEMS];
    int count = 0, nf = 0, k1[MAX_FIELDS], o1[MAX_FIELDS], k2[MAX_FIELDS], o2[MAX_FIELDS];
    const unsigned char *starts_of[MAX_ELEMS + 1];

    if (parse_prog(progbuf.buf, progbuf.len, prog, &count) != 0) {
        PyErr_SetString(PyExc_ValueError, "bad cut program");
        goto done;
    }
    PyObject *seq = PySequence_Fast(anchors_obj, "anchors must be a sequence of (k1, o1, k2, o2)");
    if (!seq) goto done;
    nf = (int)PySequence_Fast_GET_SIZE(seq);
    if (nf > MAX_FIELDS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many fields");
        goto done;
    }
    for (int f = 0; f < nf; f++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, f), "iiii", &k1[f], &o1[f], &k2[f], &o2[f])) {
            Py_DECREF(seq);
            goto done;
        }
        if (k1[f] < 0 || k1[f] > count || k2[f] < 0 || k2[f] > count || o1[f] < 0 || o2[f] < 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "bad cut anchor");
            goto done;
        }
    }
    Py_DECREF(seq);

    const unsigned char *data = buf.buf;
    Py_ssize_t len = buf.len;
    Py_ssize_t n = 0;
    for (const unsigned char *p = data; (p = memchr(p, '\n', (size_t)(data + len - p))) != NULL; p++) n++;
    if (len && data[len - 1] != '\n') n++;  /* a last line without newline (the caller never sends one) */

    rejected = PyList_New(0);
    valid = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    starts = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
    spans = PyMem_Malloc((size_t)(n ? n : 1) * (size_t)(nf ? nf : 1) * 2 * sizeof(Py_ssize_t));
    if (!rejected || !valid || !starts || !spans) {
        if (!spans) PyErr_NoMemory();
        goto done;
    }
    unsigned char *vbits = (unsigned char *)PyBytes_AS_STRING(valid);
    memset(vbits, 0, (size_t)((n + 7) / 8));
    int64_t *st = (int64_t *)PyBytes_AS_STRING(starts);
    Py_ssize_t totals[MAX_FIELDS] = {0};
    Py_ssize_t n_ok = 0;
    const unsigned char *p = data, *end = data + len;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *e = nl ? nl : end;
        st[i] = p - data;
        Py_ssize_t *sp = spans + i * nf * 2;
        int ok = match(p, e, prog, count, starts_of);
        if (ok) {
            for (int f = 0; f < nf; f++) {
                const unsigned char *fs = starts_of[k1[f]] + o1[f], *fe = starts_of[k2[f]] + o2[f];
                if (fe < fs || fe > e) { ok = 0; break; }  /* (anchors that do not fit the program) */
                sp[2 * f] = fs - data;
                sp[2 * f + 1] = fe - data;
            }
        }
        if (ok) {
            vbits[i >> 3] |= (unsigned char)(1 << (i & 7));
            n_ok++;
            for (int f = 0; f < nf; f++) totals[f] += sp[2 * f + 1] - sp[2 * f];
        } else {
            for (int f = 0; f < nf; f++) sp[2 * f] = sp[2 * f + 1] = 0;
            PyObject *line = PyBytes_FromStringAndSize((const char *)p, e - p);
            if (!line || PyList_Append(rejected, line) != 0) {
                Py_XDECREF(line);
                goto done;
            }
            Py_DECREF(line);
        }
        p = nl ? nl + 1 : end;
    }
    st[n] = len;

    columns = PyTuple_New(nf);
    if (!columns) goto done;
    int64_t *o[MAX_FIELDS], at[MAX_FIELDS];
    char *v[MAX_FIELDS];
    for (int f = 0; f < nf; f++) {
        PyObject *offs = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
        PyObject *vals = PyBytes_FromStringAndSize(NULL, totals[f]);
        PyObject *pair = offs && vals ? PyTuple_Pack(2, offs, vals) : NULL;
        Py_XDECREF(offs);
        Py_XDECREF(vals);
        if (!pair) goto done;
        PyTuple_SET_ITEM(columns, f, pair);
        o[f] = (int64_t *)PyBytes_AS_STRING(offs);  /* (alive: the pair holds them) */
        v[f] = PyBytes_AS_STRING(vals);
        at[f] = 0;
    }
    /* line by line, every field (the buffer read once, in order: not once per field) */
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_ssize_t *sp = spans + i * nf * 2;
        for (int f = 0; f < nf; f++) {
            Py_ssize_t a = sp[2 * f], b = sp[2 * f + 1];
            o[f][i] = at[f];
            if (b > a) {
                memcpy(v[f] + at[f], data + a, (size_t)(b - a));
                at[f] += b - a;
            }
        }
    }
    for (int f = 0; f < nf; f++) o[f][n] = at[f];
    result = Py_BuildValue("nOnOOO", n, valid, n_ok, rejected, starts, columns);

done:
    PyMem_Free(spans);
    Py_XDECREF(rejected);
    Py_XDECREF(valid);
    Py_XDECREF(starts);
    Py_XDECREF(columns);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&progbuf);
    return result;
}


/* ---- endpoints of request lines of the common shape ------------------------------------------------
 *
 * endpoints(offsets, data, start, n, endpoint_max) reads n request lines of an Arrow large_binary array
 * (int64 offsets, from index start) that all match arrowscan.SIMPLE_REQUEST ("METHOD /url PROTOCOL", one
 * blank each side of the URL, no '%', '@' or blank in it) and returns (endpoints, words, url_offsets,
 * url_data):
 *   endpoints  per line "METHOD " + its path with placeholders, cut to endpoint_max bytes (a list of bytes)
 *   words      (index, whole path) of the lines whose path may hold a hash or token (classify.WORD_WINDOW:
 *              8 word characters [A-Za-z0-9_-] in a row with a digit among them), for classify's _WORD
 *   url_*      the URLs as an Arrow large_binary column (for the static-file pattern)
 * The path is the URL up to '?' or '#'; then, as classify._placeholders does with Python's re (leftmost
 * matches, left to right): each UUID (_UUID) becomes ":uuid", then each "/digits" followed by one of
 * "/.;," or the end (_NUM, whose look-ahead consumes nothing) becomes "/:id".
 */
static int is_hex(unsigned char c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

static int uuid_at(const unsigned char *p, Py_ssize_t left) {
    static const int groups[5] = {8, 4, 4, 4, 12};
    if (left < 36) return 0;
    for (int g = 0, i = 0; g < 5; g++) {
        for (int k = 0; k < groups[g]; k++, i++)
            if (!is_hex(p[i])) return 0;
        if (g < 4) {
            if (p[i] != '-') return 0;
            i++;
        }
    }
    return 1;
}

static int word_char(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_' || c == '-';
}

static PyObject *endpoints(PyObject *self, PyObject *args) {
    Py_buffer ob, db;
    Py_ssize_t start, n, epmax;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnn", &ob, &db, &start, &n, &epmax)) return NULL;
    PyObject *eps = NULL, *words = NULL, *uoffs = NULL, *udata = NULL, *result = NULL;
    unsigned char *path = NULL, *out = NULL;
    const int64_t *off = ob.buf;
    const unsigned char *data = db.buf;
    if (start < 0 || n < 0 || epmax < 0 || (start + n + 1) * (Py_ssize_t)sizeof(int64_t) > ob.len
        || !aligned(ob.buf, sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "offsets out of range, or not aligned");
        goto done;
    }
    Py_ssize_t total = 0, longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = off[start + i], b = off[start + i + 1];
        if (a < 0 || b < a || b > db.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range");
            goto done;
        }
        total += b - a;
        if (b - a > longest) longest = b - a;
    }
    eps = PyList_New(n);
    words = PyList_New(0);
    uoffs = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
    udata = PyBytes_FromStringAndSize(NULL, total);
    path = PyMem_Malloc((size_t)longest + 1);
    out = PyMem_Malloc(2 * (size_t)longest + 4);
    if (!eps || !words || !uoffs || !udata || !path || !out) {
        if (!path || !out) PyErr_NoMemory();
        goto done;
    }
    int64_t *uo = (int64_t *)PyBytes_AS_STRING(uoffs);
    char *ud = PyBytes_AS_STRING(udata);
    int64_t uat = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *s = data + off[start + i], *e = data + off[start + i + 1];
        const unsigned char *sp1 = memchr(s, ' ', (size_t)(e - s));
        const unsigned char *url = sp1 ? sp1 + 1 : e;
        const unsigned char *sp2 = memchr(url, ' ', (size_t)(e - url));
        const unsigned char *url_end = sp2 ? sp2 : e;
        uo[i] = uat;
        memcpy(ud + uat, url, (size_t)(url_end - url));
        uat += url_end - url;
        const unsigned char *pe = url;
        while (pe < url_end && *pe != '?' && *pe != '#') pe++;
        /* the path with placeholders: UUIDs first, then numbers */
        Py_ssize_t plen = 0;
        unsigned char *tmp = path;
        for (const unsigned char *q = url; q < pe;) {
            if (uuid_at(q, pe - q)) {
                memcpy(tmp + plen, ":uuid", 5);
                plen += 5;
                q += 36;
            } else {
                tmp[plen++] = *q++;
            }
        }
        /* then the numbers, into out ("/N" becomes "/:id": at most twice as long) */
        Py_ssize_t w = 0;
        for (Py_ssize_t r = 0; r < plen;) {
            if (tmp[r] == '/' && r + 1 < plen && tmp[r + 1] >= '0' && tmp[r + 1] <= '9') {
                Py_ssize_t d = r + 1;
                while (d < plen && tmp[d] >= '0' && tmp[d] <= '9') d++;
                if (d == plen || tmp[d] == '/' || tmp[d] == '.' || tmp[d] == ';' || tmp[d] == ',') {
                    memcpy(out + w, "/:id", 4);
                    w += 4;
                    r = d;
                    continue;
                }
                while (r < d) out[w++] = tmp[r++];
                continue;
            }
            out[w++] = tmp[r++];
        }
        tmp = out;
        plen = w;
        Py_ssize_t mlen = sp1 ? sp1 - s : e - s;
        Py_ssize_t keep = plen < epmax ? plen : epmax;
        PyObject *ep = PyBytes_FromStringAndSize(NULL, mlen + 1 + keep);
        if (!ep) goto done;
        char *ept = PyBytes_AS_STRING(ep);
        memcpy(ept, s, (size_t)mlen);
        ept[mlen] = ' ';
        memcpy(ept + mlen + 1, tmp, (size_t)keep);
        PyList_SET_ITEM(eps, i, ep);
        /* a run of 8 or more word characters holding a digit */
        int run = 0, digit = 0, found = 0;
        for (Py_ssize_t k = 0; k < plen && !found; k++) {
            if (word_char(tmp[k])) {
                run++;
                if (tmp[k] >= '0' && tmp[k] <= '9') digit = 1;
                if (run >= 8 && digit) found = 1;
            } else {
                run = 0;
                digit = 0;
            }
        }
        if (found) {
            PyObject *item = Py_BuildValue("(ny#)", i, (const char *)tmp, plen);
            if (!item || PyList_Append(words, item) != 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
        }
    }
    uo[n] = uat;
    result = Py_BuildValue("OOOO", eps, words, uoffs, udata);

done:
    PyMem_Free(path);
    PyMem_Free(out);
    Py_XDECREF(eps);
    Py_XDECREF(words);
    Py_XDECREF(uoffs);
    Py_XDECREF(udata);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&db);
    return result;
}

/* ---- GoAccess's requested-files keys -------------------------------------------------------------------
 *
 * request_keys(lines) takes a list of request lines (bytes) and returns (keys, canon, url_offsets, url_data):
 *   keys   per line, "URL\0METHOD\0PROTOCOL" for a line of arrowscan.CANON_REQUEST's shape (a listed method, one
 *          blank, a URL without blanks, '%' or control characters, one blank, a canonical protocol, nothing
 *          after), HTTP/2.0 and HTTP/3.0 written HTTP/2 and HTTP/3 as GoAccess keys them; None for the others
 *   canon  the indexes of the lines that have a key
 *   url_*  those lines' URLs as an Arrow large_binary column (for the static-file pattern)
 */
static const char *const METHODS[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"};

static int url_byte(unsigned char c) {
    return !(c == ' ' || c == '%' || c == '\n' || c == '\r' || c == '\t' || c == 0 || c == 0x0b || c == 0x0c);
}

/* the protocol's key spelling and length, or NULL */
static const char *protocol(const unsigned char *p, Py_ssize_t n, Py_ssize_t *klen) {
    if (n == 8 && memcmp(p, "HTTP/1.", 7) == 0 && (p[7] == '0' || p[7] == '1')) {
        *klen = 8;
        return (const char *)p;
    }
    if ((n == 6 || (n == 8 && p[6] == '.' && p[7] == '0')) && memcmp(p, "HTTP/", 5) == 0 &&
        (p[5] == '2' || p[5] == '3')) {
        *klen = 6;
        return (const char *)p;
    }
    return NULL;
}

static PyObject *request_keys(PyObject *self, PyObject *args) {
    PyObject *lines;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &lines)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lines), total = 0;
    PyObject *keys = PyList_New(n), *canon = PyList_New(0), *uoffs = NULL, *udata = NULL, *result = NULL;
    Py_ssize_t *keyed = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));  /* the lines with a key */
    if (!keys || !canon || !keyed) {
        if (!keyed) PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        PyObject *key = Py_None;
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "request lines must be bytes");
            goto done;
        }
        const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(line);
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        const unsigned char *sp = memchr(s, ' ', (size_t)len);
        int listed = 0;
        if (sp) {
            for (size_t k = 0; k < sizeof(METHODS) / sizeof(METHODS[0]); k++) {
                size_t ml = strlen(METHODS[k]);
                if ((size_t)(sp - s) == ml && memcmp(s, METHODS[k], ml) == 0) listed = 1;
            }
        }
        if (listed) {
            const unsigned char *u = sp + 1, *ue = u, *e = s + len;
            while (ue < e && url_byte(*ue)) ue++;
            Py_ssize_t klen = 0;
            const char *proto = (ue > u && ue < e && *ue == ' ') ? protocol(ue + 1, e - ue - 1, &klen) : NULL;
            if (proto) {
                Py_ssize_t ul = ue - u, mlen = sp - s;
                key = PyBytes_FromStringAndSize(NULL, ul + 1 + mlen + 1 + klen);
                if (!key) goto done;
                char *k = PyBytes_AS_STRING(key);
                memcpy(k, u, (size_t)ul);
                k[ul] = 0;
                memcpy(k + ul + 1, s, (size_t)mlen);
                k[ul + 1 + mlen] = 0;
                memcpy(k + ul + 2 + mlen, proto, (size_t)klen);
                PyObject *at = PyLong_FromSsize_t(i);
                if (!at || PyList_Append(canon, at) != 0) {
                    Py_XDECREF(at);
                    Py_DECREF(key);
                    goto done;
                }
                Py_DECREF(at);
                keyed[m++] = i;
                total += ul;
            }
        }
        if (key == Py_None) Py_INCREF(Py_None);
        PyList_SET_ITEM(keys, i, key);
    }
    uoffs = PyBytes_FromStringAndSize(NULL, (m + 1) * (Py_ssize_t)sizeof(int64_t));
    udata = PyBytes_FromStringAndSize(NULL, total);
    if (!uoffs || !udata) goto done;
    int64_t *uo = (int64_t *)PyBytes_AS_STRING(uoffs);
    char *ud = PyBytes_AS_STRING(udata);
    int64_t at = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *key = PyList_GET_ITEM(keys, keyed[j]);
        const char *k = PyBytes_AS_STRING(key);
        Py_ssize_t ul = (Py_ssize_t)strlen(k);  /* the URL ends at the key's first NUL (it holds none) */
        uo[j] = at;
        memcpy(ud + at, k, (size_t)ul);
        at += ul;
    }
    uo[m] = at;
    result = Py_BuildValue("OOOO", keys, canon, uoffs, udata);

done:
    PyMem_Free(keyed);
    Py_XDECREF(keys);
    Py_XDECREF(canon);
    Py_XDECREF(uoffs);
    Py_XDECREF(udata);
    return result;
}

/* ---- hits per path --------------------------------------------------------------------------------------
 *
 * path_counts(counts) takes a dict of GoAccess keys ("URL\0METHOD\0PROTOCOL", bytes) to hits (int) and returns a
 * new dict of each key's path (the URL up to its first '?') to the sum of its keys' hits, in order of first
 * appearance: access.all_paths' loop, without a Python step per key.
 */
static PyObject *path_counts(PyObject *self, PyObject *args) {
    PyObject *counts;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &counts)) return NULL;
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(counts, &pos, &key, &value)) {
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            goto fail;
        }
        const char *k = PyBytes_AS_STRING(key);
        Py_ssize_t len = PyBytes_GET_SIZE(key), end = 0;
        while (end < len && k[end] != 0 && k[end] != '?') end++;
        PyObject *path = end == len ? (Py_INCREF(key), key) : PyBytes_FromStringAndSize(k, end);
        if (!path) goto fail;
        PyObject *had = PyDict_GetItemWithError(out, path);  /* borrowed */
        PyObject *sum = NULL;
        if (had) {
            sum = PyNumber_Add(had, value);
        } else if (!PyErr_Occurred()) {
            sum = (Py_INCREF(value), value);
        }
        if (!sum || PyDict_SetItem(out, path, sum) != 0) {
            Py_XDECREF(sum);
            Py_DECREF(path);
            goto fail;
        }
        Py_DECREF(sum);
        Py_DECREF(path);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---- the entries that may be among the n most frequent -------------------------------------------------------
 *
 * top_candidates(counts, n) takes a dict of anything to int counts and returns the list of its (key, count) items
 * whose count is at least the n-th highest count (counted with repeats, as heapq.nlargest(n, counts.values())[-1]
 * is; every item when the dict holds n or fewer), in the dict's order: access.top's pre-selection of a large counter
 * (request keys, paths, clients), without a Python step per entry.  None (the caller does it in Python) when a count
 * is not an int that fits in a C long long; n < 1 is a ValueError.
 */
static void heap_down(long long *h, Py_ssize_t n, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t l = 2 * i + 1, m = i;
        if (l < n && h[l] < h[m]) m = l;
        if (l + 1 < n && h[l + 1] < h[m]) m = l + 1;
        if (m == i) return;
        long long t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* append a new reference (NULL: the call that made it failed) to list, and drop it; -1 on failure */
static int append_new(PyObject *list, PyObject *item) {
    if (!item) return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

/* keep the n highest values offered in a min-heap of (at most) n, its root the lowest; *have: how many it holds */
static void heap_offer(long long *h, Py_ssize_t *have, Py_ssize_t n, long long v) {
    if (*have < n) {
        Py_ssize_t i = (*have)++;
        h[i] = v;
        while (i > 0 && h[(i - 1) / 2] > h[i]) {
            long long t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (v > h[0]) {
        h[0] = v;
        heap_down(h, n, 0);
    }
}

static int count_of(PyObject *value, long long *out) {
    if (!PyLong_Check(value)) return 0;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static PyObject *top_candidates(PyObject *self, PyObject *args) {
    PyObject *counts;
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!n", &PyDict_Type, &counts, &n)) return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be at least 1");
        return NULL;
    }
    Py_ssize_t size = PyDict_GET_SIZE(counts), have = 0, pos = 0;
    long long *heap = PyMem_Malloc(sizeof(long long) * (size_t)(n < size ? n : (size ? size : 1)));
    if (!heap) return PyErr_NoMemory();
    PyObject *key, *value, *out = NULL;
    long long v, floor = 0;
    while (PyDict_Next(counts, &pos, &key, &value)) {  /* the n highest counts: a min-heap, its root the lowest */
        if (!count_of(value, &v)) {
            PyMem_Free(heap);
            Py_RETURN_NONE;
        }
        heap_offer(heap, &have, n, v);
    }
    if (have) floor = heap[0];
    PyMem_Free(heap);
    out = PyList_New(0);
    if (!out) return NULL;
    pos = 0;
    while (PyDict_Next(counts, &pos, &key, &value)) {
        if (!count_of(value, &v)) {  /* (a dict changed in between: a __hash__ or __eq__ of its keys) */
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        if (v < floor) continue;
        if (append_new(out, PyTuple_Pack(2, key, value)) != 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* ---- the busiest paths -----------------------------------------------------------------------------------
 *
 * path_top(counts, others, n) sums hits per path as access.all_paths does — each key of the dict counts (GoAccess
 * keys "URL\0METHOD\0PROTOCOL", bytes) by its path (the URL up to its first '?'), then each dict of others (paths,
 * bytes) by its whole key — and returns the list of (path, hits) whose hits reach the n-th highest (counted with
 * repeats, ties included; every path when there are n or fewer): what access.top picks from all_paths(p) before
 * it orders them, without a bytes object and a dict entry made per distinct path (the summary of a 100 MB log:
 * 70,000 paths of 96,000 keys, for a list of ten).  The sums are kept in a table of this call's own, pointing
 * into the keys (no Python code runs meanwhile).  None (the caller does it in Python) when a key is not bytes,
 * a count is not an int that fits in a C long long, or a sum overflows one; n < 1 is a ValueError.  The list's
 * order is unspecified.
 */
typedef struct {
    const char *p;
    Py_ssize_t len;
    uint64_t h;
    long long sum;
} PathSum;

static uint64_t path_hash(const char *p, Py_ssize_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)len;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, (size_t)(len - i));
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h;
}

typedef struct {
    PathSum *entries;
    Py_ssize_t used;
    uint32_t *slots;  /* index + 1 into entries; 0: free */
    size_t mask;
} PathTable;

/* 0: added; -1: the sum overflowed */
static int path_add(PathTable *t, const char *p, Py_ssize_t len, long long c) {
    uint64_t h = path_hash(p, len);
    size_t i = (size_t)h & t->mask;
    for (;;) {
        uint32_t s = t->slots[i];
        if (!s) break;
        PathSum *e = &t->entries[s - 1];
        if (e->h == h && e->len == len && memcmp(e->p, p, (size_t)len) == 0) {
            return __builtin_add_overflow(e->sum, c, &e->sum) ? -1 : 0;
        }
        i = (i + 1) & t->mask;
    }
    PathSum *e = &t->entries[t->used++];
    e->p = p;
    e->len = len;
    e->h = h;
    e->sum = c;
    t->slots[i] = (uint32_t)t->used;
    return 0;
}

static PyObject *path_top(PyObject *self, PyObject *args) {
    PyObject *counts, *others;
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyDict_Type, &counts, &PyList_Type, &others, &n)) return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be at least 1");
        return NULL;
    }
    Py_ssize_t total = PyDict_GET_SIZE(counts), n_others = PyList_GET_SIZE(others);
    for (Py_ssize_t j = 0; j < n_others; j++) {
        PyObject *d = PyList_GET_ITEM(others, j);
        if (!PyDict_Check(d)) {
            PyErr_SetString(PyExc_TypeError, "others must be a list of dicts");
            return NULL;
        }
        total += PyDict_GET_SIZE(d);
    }
    if (total >= 0x7FFFFFFF / 2) Py_RETURN_NONE;  /* (uint32_t slots) */
    size_t cap = 16;
    while (cap < (size_t)total * 2) cap <<= 1;
    PathTable t = {PyMem_Malloc(sizeof(PathSum) * (size_t)(total ? total : 1)), 0,
                   PyMem_Calloc(cap, sizeof(uint32_t)), cap - 1};
    long long *heap = PyMem_Malloc(sizeof(long long) * (size_t)n);
    PyObject *out = NULL;
    if (!t.entries || !t.slots || !heap) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *key, *value;
    long long v;
    for (Py_ssize_t j = -1; j < n_others; j++) {
        PyObject *d = j < 0 ? counts : PyList_GET_ITEM(others, j);
        Py_ssize_t pos = 0;
        while (PyDict_Next(d, &pos, &key, &value)) {
            if (!PyBytes_Check(key) || !count_of(value, &v)) goto fallback;
            const char *k = PyBytes_AS_STRING(key);
            Py_ssize_t len = PyBytes_GET_SIZE(key);
            if (j < 0) {  /* a GoAccess key: its URL's path */
                const char *z = memchr(k, 0, (size_t)len);
                if (z) len = z - k;
                const char *q = memchr(k, '?', (size_t)len);
                if (q) len = q - k;
            }
            if (path_add(&t, k, len, v) != 0) goto fallback;
        }
    }
    Py_ssize_t have = 0;
    for (Py_ssize_t i = 0; i < t.used; i++) {  /* the n highest sums: a min-heap, its root the lowest */
        heap_offer(heap, &have, n, t.entries[i].sum);
    }
    long long floor = have ? heap[0] : 0;
    out = PyList_New(0);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < t.used; i++) {
        PathSum *e = &t.entries[i];
        if (e->sum < floor) continue;
        if (append_new(out, Py_BuildValue("(y#L)", e->p, e->len, e->sum)) != 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
    goto done;
fallback:
    out = Py_None;
    Py_INCREF(out);
done:
    PyMem_Free(t.entries);
    PyMem_Free(t.slots);
    PyMem_Free(heap);
    return out;
}

/* add_counts(into, other): into[k] = other[k] + into.get(k, 0) for every key of other, in other's order, as
 * Counter.update(other) does for a mapping (merging the partial results of the scanning processes). */
static PyObject *add_counts(PyObject *self, PyObject *args) {
    PyObject *into, *other;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &into, &PyDict_Type, &other)) return NULL;
    if (into == other) {  /* (Counter.update of itself doubles every count: iterate a copy) */
        other = PyDict_Copy(other);
        if (!other) return NULL;
    } else {
        Py_INCREF(other);
    }
    PyObject *zero = PyLong_FromLong(0);
    if (!zero) {
        Py_DECREF(other);
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(other, &pos, &key, &value)) {
        PyObject *had = PyDict_GetItemWithError(into, key);  /* borrowed */
        PyObject *sum = NULL;
        if (had) {
            sum = PyNumber_Add(value, had);
        } else if (!PyErr_Occurred()) {
            sum = PyNumber_Add(value, zero);
        }
        if (!sum || PyDict_SetItem(into, key, sum) != 0) {
            Py_XDECREF(sum);
            Py_DECREF(zero);
            Py_DECREF(other);
            return NULL;
        }
        Py_DECREF(sum);
    }
    Py_DECREF(zero);
    Py_DECREF(other);
    Py_RETURN_NONE;
}

/* count_rows(into, keys, indices, offset, length, validity): the rows of an Arrow int32 array (its data buffer
 * ``indices``, ``offset`` and ``length`` as the array has them, ``validity`` its bitmap or None) counted per index,
 * then into[keys[i]] += that count for each index i counted, in the order of the indices (a dictionary encoding's
 * are in order of first appearance: the order Counter.update of the rows' keys inserts them); a key None is left
 * out.  Counter.update(keys[i] for each row) without a Python object per row (a buffer has tens of thousands). */
static PyObject *count_rows(PyObject *self, PyObject *args) {
    PyObject *into, *keys, *validity;
    Py_buffer data, bits;
    Py_ssize_t offset, length;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!y*nnO", &PyDict_Type, &into, &PyList_Type, &keys, &data, &offset, &length,
                          &validity))
        return NULL;
    int has_bits = validity != Py_None;
    if (has_bits && PyObject_GetBuffer(validity, &bits, PyBUF_SIMPLE) != 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    Py_ssize_t *counts = NULL;
    if (offset < 0 || length < 0 || (offset + length) * 4 > data.len
        || (has_bits && (offset + length + 7) / 8 > bits.len) || !aligned(data.buf, sizeof(int32_t))) {
        PyErr_SetString(PyExc_ValueError, "count_rows: the buffers are shorter than offset + length, or not aligned");
        goto done;
    }
    counts = PyMem_Calloc((size_t)(nkeys ? nkeys : 1), sizeof(Py_ssize_t));
    if (!counts) {
        PyErr_NoMemory();
        goto done;
    }
    const int32_t *idx = (const int32_t *)data.buf;
    const unsigned char *vb = has_bits ? (const unsigned char *)bits.buf : NULL;
    for (Py_ssize_t r = offset; r < offset + length; r++) {
        if (vb && !((vb[r >> 3] >> (r & 7)) & 1)) continue;
        int32_t i = idx[r];
        if (i < 0 || i >= nkeys) {
            PyErr_SetString(PyExc_IndexError, "count_rows: an index is out of the keys' range");
            goto done;
        }
        counts[i]++;
    }
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        if (!counts[i]) continue;
        PyObject *key = PyList_GET_ITEM(keys, i);  /* borrowed */
        if (key == Py_None) continue;
        Py_INCREF(key);  /* (the dict's hash or eq may run code that changes the list) */
        PyObject *had = PyDict_GetItemWithError(into, key);  /* borrowed */
        PyObject *sum = NULL;
        if (had) {
            PyObject *c = PyLong_FromSsize_t(counts[i]);
            if (c) {
                sum = PyNumber_Add(had, c);
                Py_DECREF(c);
            }
        } else if (!PyErr_Occurred()) {
            sum = PyLong_FromSsize_t(counts[i]);
        }
        int bad = !sum || PyDict_SetItem(into, key, sum) != 0;
        Py_XDECREF(sum);
        Py_DECREF(key);
        if (bad) goto done;
        if (PyList_GET_SIZE(keys) != nkeys) {
            PyErr_SetString(PyExc_RuntimeError, "count_rows: the keys changed while counting");
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(counts);
    if (has_bits) PyBuffer_Release(&bits);
    PyBuffer_Release(&data);
    return result;
}

/* unquote(b) -> bytes: urllib.parse.unquote_to_bytes of a bytes-like object — '%' and two hex digits (either case)
 * become that byte, any other '%' stays — in one pass instead of a Python loop over the pieces between the '%'s
 * (classify.decode_request undoes percent-encoding of every new distinct referer and suspicious request line). */
static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static PyObject *unquote(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;  /* bytes, bytearray, memoryview */
    const unsigned char *s = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    const unsigned char *pct = n ? memchr(s, '%', (size_t)n) : NULL;
    if (!pct && PyBytes_CheckExact(arg)) {
        PyBuffer_Release(&view);
        Py_INCREF(arg);
        return arg;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t i = pct ? pct - s : n, j = i;
    memcpy(o, s, (size_t)i);
    while (i < n) {
        unsigned char c = s[i];
        int hi, lo;
        if (c == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            o[j++] = (unsigned char)(hi * 16 + lo);
            i += 3;
        } else {
            o[j++] = c;
            i++;
        }
    }
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&out, j) < 0) return NULL;
    return out;
}

/* collapse_lists(buf, quotes) -> bytes | None: the lists of upstream values in buf's lines made single tokens.
 *
 * nginx writes one value per upstream server contacted, "0.800, 0.100" after a retry and "0.004 : 0.010" after an
 * internal redirect; the line parser (goaccess.GoAccessLineParser, its %P/%Y/%X) reads such a list, at a variable
 * followed by a blank, as Python's re reads _VALUE_LIST there: a greedy run of non-blanks, then " : " or (the run
 * given back its last ',') ", ", then greedy runs after " : " while a run follows — the list taken when a blank
 * follows it.  This walks each
 * line holding exactly `quotes` quotes, and at each start of a token of its unquoted text (after a blank or a
 * quote, or at the line start) reads on exactly so; where that finds a list followed by a blank, the blanks of its
 * separators become 0xA0 (", " -> ",\xA0", " : " -> "\xA0:\xA0": the same length, so offsets hold).  The caller
 * makes sure (a format whose list variables are whole tokens; no 0xA0 but in their tokens: the cut program's
 * classes, the Python split's count) that such a token is read only where the line parser reads a list; there the
 * token is the parser's value, 0xA0 back to ' '.  A list that ends the line is taken too: the line parser reads
 * the last variable of a format to the line's end, and a line whose format goes on lacks its next values (the split
 * sends it to the line parser).  A line whose list takes in a quote, or whose unquoted text keeps a separator the
 * parser reads no list with, is left as it is: it goes to the line parser as before.  None when buf holds a 0xA0
 * byte (the change would not be undone exactly) or no line changed. */
static Py_ssize_t piece_end(const unsigned char *s, Py_ssize_t j, Py_ssize_t len) {
    while (j < len && s[j] != ' ') j++;
    return j;
}

/* 1: the line's lists collapsed in d (0: it has none), -1: it is left as it is (d restored) */
static int collapse_line(const unsigned char *s, unsigned char *d, Py_ssize_t len) {
    int inq = 0, changed = 0;
    Py_ssize_t k = 0;
    while (k < len) {
        unsigned char c = s[k];
        if (c == '"') {  /* a quoted value: to its closing quote at once (the line holds an even number) */
            const unsigned char *close = memchr(s + k + 1, '"', (size_t)(len - k - 1));
            k = close ? close - s + 1 : len;
            continue;
        }
        if (c == ' ') {
            k++;
            continue;
        }
        /* a token starts at k: read a list from it as the line parser's regex would */
        Py_ssize_t piece = k, j = piece_end(s, k, len), seps = 0;
        for (;;) {  /* (the separators' blanks are changed in d as they are found) */
            if (j + 3 < len && s[j] == ' ' && s[j + 1] == ':' && s[j + 2] == ' ' && s[j + 3] != ' ') {
                seps++;
                d[j] = d[j + 2] = 0xA0;
                piece = j + 3;
                j = piece_end(s, piece, len);
            } else if (!seps && j + 1 < len && s[j] == ' ' && j - 1 > piece && s[j - 1] == ',' && s[j + 1] != ' ') {
                /* the first value given back its ',': the regex needs one separator, and backtracks for it; after
                 * that a greedy value ending with ',' stays whole (the repetition stops there, the match is made) */
                seps++;
                d[j] = 0xA0;
                piece = j + 1;
                j = piece_end(s, piece, len);
            } else {
                break;
            }
        }
        if (!seps) {
            while (k < len && s[k] != ' ' && s[k] != '"') k++;
            continue;
        }
        /* (a list that ends the line: the line parser reads the last variable of a format to the line's end, the
         * list with it — and where the format goes on, the line lacks its next values: the split sends it to the
         * line parser) */
        if (memchr(s + k, '"', (size_t)(j - k))) {  /* a list across a quote */
            memcpy(d, s, (size_t)len);
            return -1;
        }
        changed = 1;
        k = j;
    }
    if (changed) {  /* a separator left in the unquoted text (not read as a list): the line as it was */
        inq = 0;
        for (Py_ssize_t i = 0; i + 1 < len; i++) {
            if (d[i] == '"') inq = !inq;
            else if (!inq && ((d[i] == ',' && d[i + 1] == ' ') ||
                              (d[i] == ' ' && i + 2 < len && d[i + 1] == ':' && d[i + 2] == ' '))) {
                memcpy(d, s, (size_t)len);
                return -1;
            }
        }
    }
    return changed;
}

static PyObject *collapse_lists(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t quotes;
    if (!PyArg_ParseTuple(args, "y*n", &view, &quotes)) return NULL;
    const unsigned char *s = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    if (!n || memchr(s, 0xA0, (size_t)n)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)s, n);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(out);
    int changed = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        const unsigned char *nl = memchr(s + i, '\n', (size_t)(n - i));
        Py_ssize_t end = nl ? nl - s : n, q = 0;
        for (const unsigned char *p = s + i; (p = memchr(p, '"', (size_t)(s + end - p))) != NULL; p++) q++;
        if (q == quotes && collapse_line(s + i, d + i, end - i) > 0) changed = 1;
        i = end + 1;
    }
    PyBuffer_Release(&view);
    if (!changed) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* ---- distinct combinations of coded columns ------------------------------------------------------------
 *
 * combos(cols, keep, count, into): the distinct combinations of the codes of 1 to MAX_COMBO_COLS Arrow int32
 * arrays of one length (dictionary codes: what arrowscan.ArrowScanner._combos made with dictionary_encode and
 * int64 arithmetic, value_counts or unique), in one hash pass.
 *   cols   per column (keys, data, offset, length, validity): ``keys`` a list (code i stands for keys[i]), then the
 *          array's data buffer, offset and length and its validity bitmap or None (arrowscan._int32_buffers)
 *   keep   None, or a boolean array of that length as (data, offset, validity): only the rows where it is valid and
 *          true are read (Array.filter's: a null drops the row)
 *   count  whether to count each combination's rows
 *   into   None: returns (values, counts): per column, the keys of each combination; the count of each (an empty
 *          list unless count).  A dict: into[k] = count + into.get(k, 0) for each combination's key k (the keys'
 *          tuple; the key itself for one column), as Counter.update(dict) does, and returns None.
 * A row with a null code is left out; the combinations come in the order of their first row (value_counts' and
 * unique's order).  A code outside its keys raises IndexError; buffers shorter than offset + length, ValueError.
 */
#define MAX_COMBO_COLS 8

/* do `count` items of `size` bytes from `offset` fit in a buffer of `len` bytes? (no overflow) */
static int span_fits(Py_ssize_t offset, Py_ssize_t count, Py_ssize_t size, Py_ssize_t len) {
    if (offset < 0 || count < 0 || len < 0) return 0;
    Py_ssize_t cap = len / size;
    return offset <= cap && count <= cap - offset;
}

/* do `count` bits from bit `offset` fit in a bitmap of `len` bytes? */
static int bits_fit(Py_ssize_t offset, Py_ssize_t count, Py_ssize_t len) {
    if (offset < 0 || count < 0 || len < 0 || len > PY_SSIZE_T_MAX / 8) return 0;
    return offset <= len * 8 && count <= len * 8 - offset;
}

static int bit_at(const unsigned char *b, Py_ssize_t i) { return (b[i >> 3] >> (i & 7)) & 1; }

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* the seed of combos' hash: this process's own (from the bytes hash's secret, randomized per process unless
 * PYTHONHASHSEED says otherwise), so that no one who writes into a log can choose pairs of codes that fall into a
 * few slots of the table (linear probing: quadratic time in the rows of such pairs) */
static uint64_t combo_seed(void) {
    static uint64_t seed;
    static int done;
    if (!done) {
        PyObject *b = PyBytes_FromString("upkeeper.logs._cut.combos");
        Py_hash_t h = b ? PyObject_Hash(b) : -1;
        Py_XDECREF(b);
        if (h == -1) {  /* (no memory for 25 bytes: the fixed seed this once) */
            PyErr_Clear();
            return 0x9e3779b97f4a7c15ULL;
        }
        seed = mix64((uint64_t)h ^ 0x9e3779b97f4a7c15ULL);
        done = 1;
    }
    return seed;
}

static PyObject *combos(PyObject *self, PyObject *args) {
    PyObject *cols_obj, *keep_obj, *into;
    int count;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOpO", &cols_obj, &keep_obj, &count, &into)) return NULL;
    if (into != Py_None && !PyDict_Check(into)) {
        PyErr_SetString(PyExc_TypeError, "combos: into must be a dict or None");
        return NULL;
    }
    PyObject *keys[MAX_COMBO_COLS];
    Py_buffer data[MAX_COMBO_COLS], bits[MAX_COMBO_COLS], kdata, kbits;
    int got_data[MAX_COMBO_COLS] = {0}, got_bits[MAX_COMBO_COLS] = {0}, got_kdata = 0, got_kbits = 0;
    Py_ssize_t offs[MAX_COMBO_COLS], koff = 0, n = 0;
    PyObject *result = NULL, *values = NULL, *counts = NULL;
    Py_ssize_t *slots = NULL, *dcount = NULL, *first = NULL;
    int ncols = 0;
    PyObject *seq = PySequence_Fast(cols_obj, "combos: cols must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t nseq = PySequence_Fast_GET_SIZE(seq);
    if (nseq < 1 || nseq > MAX_COMBO_COLS) {
        PyErr_SetString(PyExc_ValueError, "combos: 1 to 8 columns");
        goto done;
    }
    for (Py_ssize_t j = 0; j < nseq; j++) {
        PyObject *validity;
        Py_ssize_t length;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, j), "O!y*nnO", &PyList_Type, &keys[j], &data[j],
                              &offs[j], &length, &validity))
            goto done;
        got_data[j] = 1;
        Py_INCREF(keys[j]);  /* (held: the dict's hash or eq may run code that changes cols) */
        ncols = (int)j + 1;
        if (validity != Py_None) {
            if (PyObject_GetBuffer(validity, &bits[j], PyBUF_SIMPLE) != 0) goto done;
            got_bits[j] = 1;
        }
        if (j == 0) n = length;
        if (length != n || !span_fits(offs[j], length, 4, data[j].len)
            || (got_bits[j] && !bits_fit(offs[j], length, bits[j].len)) || !aligned(data[j].buf, sizeof(int32_t))) {
            PyErr_SetString(PyExc_ValueError, "combos: the columns' lengths differ, their buffers are too short or "
                            "not aligned");
            goto done;
        }
    }
    if (keep_obj != Py_None) {
        PyObject *kvalid;
        if (!PyArg_ParseTuple(keep_obj, "y*nO", &kdata, &koff, &kvalid)) goto done;
        got_kdata = 1;
        if (kvalid != Py_None) {
            if (PyObject_GetBuffer(kvalid, &kbits, PyBUF_SIMPLE) != 0) goto done;
            got_kbits = 1;
        }
        if (!bits_fit(koff, n, kdata.len) || (got_kbits && !bits_fit(koff, n, kbits.len))) {
            PyErr_SetString(PyExc_ValueError, "combos: the keep mask's buffers are too short");
            goto done;
        }
    }
    /* the hash table: slots hold a combination's number + 1 (0: empty), at least twice as many as rows */
    Py_ssize_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    dcount = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    first = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));  /* each combination's first row */
    if (!slots || !dcount || !first) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t nd = 0;
    const int32_t *code[MAX_COMBO_COLS];
    const unsigned char *valid[MAX_COMBO_COLS];
    for (int j = 0; j < ncols; j++) {
        code[j] = (const int32_t *)data[j].buf + offs[j];
        valid[j] = got_bits[j] ? (const unsigned char *)bits[j].buf : NULL;
    }
    const uint64_t seed = combo_seed();
    for (Py_ssize_t r = 0; r < n; r++) {
        if (got_kdata && (!bit_at(kdata.buf, koff + r) || (got_kbits && !bit_at(kbits.buf, koff + r)))) continue;
        uint64_t h = seed;
        int skip = 0;
        for (int j = 0; j < ncols; j++) {
            if (valid[j] && !bit_at(valid[j], offs[j] + r)) {
                skip = 1;
                break;
            }
            int32_t c = code[j][r];
            if (c < 0 || c >= PyList_GET_SIZE(keys[j])) {
                PyErr_SetString(PyExc_IndexError, "combos: a code is out of its keys' range");
                goto done;
            }
            h = mix64(h ^ (uint64_t)(uint32_t)c) + (uint64_t)j;
        }
        if (skip) continue;
        Py_ssize_t at = (Py_ssize_t)(h & (uint64_t)(cap - 1));
        for (;;) {
            Py_ssize_t d = slots[at];
            if (!d) {
                slots[at] = nd + 1;
                first[nd] = r;
                dcount[nd++] = 1;
                break;
            }
            Py_ssize_t f = first[d - 1];
            int same = 1;
            for (int j = 0; j < ncols && same; j++) same = code[j][f] == code[j][r];
            if (same) {
                dcount[d - 1]++;
                break;
            }
            at = (at + 1) & (cap - 1);
        }
    }
    if (into != Py_None) {
        for (Py_ssize_t d = 0; d < nd; d++) {
            PyObject *key;
            Py_ssize_t f = first[d];
            if (ncols == 1) {
                if (code[0][f] >= PyList_GET_SIZE(keys[0])) goto changed;
                key = PyList_GET_ITEM(keys[0], code[0][f]);
                Py_INCREF(key);
            } else {
                key = PyTuple_New(ncols);
                if (!key) goto done;
                for (int j = 0; j < ncols; j++) {
                    if (code[j][f] >= PyList_GET_SIZE(keys[j])) {
                        Py_DECREF(key);
                        goto changed;
                    }
                    PyObject *v = PyList_GET_ITEM(keys[j], code[j][f]);
                    Py_INCREF(v);
                    PyTuple_SET_ITEM(key, j, v);
                }
            }
            PyObject *c = PyLong_FromSsize_t(dcount[d]);
            PyObject *had = c ? PyDict_GetItemWithError(into, key) : NULL;  /* borrowed */
            PyObject *sum = NULL;
            if (had) {
                sum = PyNumber_Add(c, had);
            } else if (c && !PyErr_Occurred()) {
                sum = (Py_INCREF(c), c);
            }
            int bad = !sum || PyDict_SetItem(into, key, sum) != 0;
            Py_XDECREF(sum);
            Py_XDECREF(c);
            Py_DECREF(key);
            if (bad) goto done;
        }
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    values = PyTuple_New(ncols);
    counts = PyList_New(count ? nd : 0);
    if (!values || !counts) goto done;
    for (int j = 0; j < ncols; j++) {
        PyObject *col = PyList_New(nd);
        if (!col) goto done;
        PyTuple_SET_ITEM(values, j, col);
        for (Py_ssize_t d = 0; d < nd; d++) {
            int32_t c = code[j][first[d]];
            if (c >= PyList_GET_SIZE(keys[j])) goto changed;
            PyObject *v = PyList_GET_ITEM(keys[j], c);
            Py_INCREF(v);
            PyList_SET_ITEM(col, d, v);
        }
    }
    for (Py_ssize_t d = 0; count && d < nd; d++) {
        PyObject *c = PyLong_FromSsize_t(dcount[d]);
        if (!c) goto done;
        PyList_SET_ITEM(counts, d, c);
    }
    result = PyTuple_Pack(2, values, counts);
    goto done;
changed:
    PyErr_SetString(PyExc_RuntimeError, "combos: the keys changed while counting");
done:
    PyMem_Free(slots);
    PyMem_Free(dcount);
    PyMem_Free(first);
    Py_XDECREF(values);
    Py_XDECREF(counts);
    for (int j = 0; j < MAX_COMBO_COLS; j++) {
        if (j < ncols) Py_DECREF(keys[j]);
        if (got_data[j]) PyBuffer_Release(&data[j]);
        if (got_bits[j]) PyBuffer_Release(&bits[j]);
    }
    if (got_kdata) PyBuffer_Release(&kdata);
    if (got_kbits) PyBuffer_Release(&kbits);
    Py_DECREF(seq);
    return result;
}

/* ---- the endpoint id and static path of each distinct request line ------------------------------------------
 *
 * request_ids(lines, ep_of, static_of, ep_ids, ep_list) -> (ids, statics, any_static): for each request line of the
 * list ``lines`` (all of them learned: in ``ep_of`` and ``static_of``), the id of its endpoint ep_of[line] in
 * ``ep_ids`` (an endpoint not there yet gets the next one, len(ep_list), and is appended to ``ep_list``: ids in the
 * order of first appearance) and its static path static_of[line] (None: not a static file).  ``ids`` is the ids as
 * an Arrow int32 data buffer (bytes), ``statics`` the list of static paths, ``any_static`` whether one is not None.
 * What arrowscan.ArrowScanner._aggregate did with three maps over the lines, a dict.fromkeys and a pyarrow array of
 * a Python list.  A line not learned raises KeyError; an id that is no int in [0, 2**31), ValueError or TypeError.
 */
static PyObject *request_ids(PyObject *self, PyObject *args) {
    PyObject *lines, *ep_of, *static_of, *ep_ids, *ep_list;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &lines, &PyDict_Type, &ep_of, &PyDict_Type, &static_of,
                          &PyDict_Type, &ep_ids, &PyList_Type, &ep_list))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lines);
    if (n > PY_SSIZE_T_MAX / 4) return PyErr_NoMemory();
    PyObject *ids = PyBytes_FromStringAndSize(NULL, n * 4), *statics = PyList_New(n), *result = NULL;
    int any_static = 0;
    if (!ids || !statics) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(ids);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(lines)) {
            PyErr_SetString(PyExc_RuntimeError, "request_ids: the lines changed");
            goto done;
        }
        PyObject *raw = PyList_GET_ITEM(lines, i);
        Py_INCREF(raw);
        PyObject *ep = PyDict_GetItemWithError(ep_of, raw);  /* borrowed */
        if (!ep) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, raw);
            Py_DECREF(raw);
            goto done;
        }
        Py_INCREF(ep);
        long id = -1;
        PyObject *known = PyDict_GetItemWithError(ep_ids, ep);  /* borrowed */
        if (known) {
            id = PyLong_AsLong(known);
            if (id == -1 && PyErr_Occurred()) {
                Py_DECREF(ep);
                Py_DECREF(raw);
                goto done;
            }
        } else if (!PyErr_Occurred()) {
            Py_ssize_t next = PyList_GET_SIZE(ep_list);
            PyObject *num = next <= INT32_MAX ? PyLong_FromSsize_t(next) : NULL;
            int bad = !num || PyDict_SetItem(ep_ids, ep, num) != 0 || PyList_Append(ep_list, ep) != 0;
            Py_XDECREF(num);
            if (bad) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "request_ids: more than 2**31 endpoints");
                Py_DECREF(ep);
                Py_DECREF(raw);
                goto done;
            }
            id = (long)next;
        } else {
            Py_DECREF(ep);
            Py_DECREF(raw);
            goto done;
        }
        Py_DECREF(ep);
        if (id < 0 || id > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "request_ids: an endpoint id out of int32's range");
            Py_DECREF(raw);
            goto done;
        }
        uint32_t u = (uint32_t)id;
        out[4 * i] = (unsigned char)u;
        out[4 * i + 1] = (unsigned char)(u >> 8);
        out[4 * i + 2] = (unsigned char)(u >> 16);
        out[4 * i + 3] = (unsigned char)(u >> 24);
        PyObject *sp = PyDict_GetItemWithError(static_of, raw);  /* borrowed */
        if (!sp) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, raw);
            Py_DECREF(raw);
            goto done;
        }
        Py_DECREF(raw);
        Py_INCREF(sp);
        PyList_SET_ITEM(statics, i, sp);
        if (sp != Py_None) any_static = 1;
    }
    result = Py_BuildValue("OOO", ids, statics, any_static ? Py_True : Py_False);
done:
    Py_XDECREF(ids);
    Py_XDECREF(statics);
    return result;
}

/* ---- the shape of new request lines, and their static files ----------------------------------------------------
 *
 * request_shapes(offsets, data, start, n, extensions) -> (simple, statics): for n request lines of an Arrow
 * large_binary array (int64 offsets, from index start):
 *   simple   an Arrow validity-style bitmap (bytes, LSB first) of the lines matching arrowscan.SIMPLE_REQUEST as
 *            RE2 matches it on bytes: "GET", "HEAD", "PUT", "DELETE", "PATCH" or "OPTIONS", one blank, a URL beginning
 *            with '/' without ' ', '%', '@', '\t', '\n', '\r', '\0', '\v' or '\f', one blank, and "HTTP/1.0",
 *            "HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/3" or "HTTP/3.0" to the end
 *   statics  when extensions (a tuple of bytes) is not None: (k, path) for the k-th simple line (counted from 0)
 *            whose URL matches arrowscan.static_pattern(extensions) ("(?s).(?:ext|...)$": longer than an extension
 *            it ends with, an ASCII letter of the extension matching either case of it, other bytes themselves),
 *            path its URL up to the first '?'; else an empty list
 */
static int url_ok(unsigned char c) {
    return !(c == ' ' || c == '%' || c == '@' || c == '\t' || c == '\n' || c == '\r' || c == 0 || c == 0x0b ||
             c == 0x0c);
}

/* 1 when [s, s+len) is of SIMPLE_REQUEST's shape; *u0, *u1: its URL */
static int simple_request(const unsigned char *s, Py_ssize_t len, Py_ssize_t *u0, Py_ssize_t *u1) {
    static const char *const meths[] = {"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"};
    static const char *const protos[] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/3", "HTTP/3.0"};
    Py_ssize_t i = -1;
    for (size_t m = 0; m < sizeof(meths) / sizeof(meths[0]); m++) {
        Py_ssize_t ml = (Py_ssize_t)strlen(meths[m]);
        if (len > ml && memcmp(s, meths[m], (size_t)ml) == 0 && s[ml] == ' ') {
            i = ml + 1;
            break;
        }
    }
    if (i < 0 || i >= len || s[i] != '/') return 0;
    Py_ssize_t start = i;
    while (i < len && url_ok(s[i])) i++;
    if (i >= len || s[i] != ' ') return 0;
    Py_ssize_t pl = len - i - 1;
    for (size_t k = 0; k < sizeof(protos) / sizeof(protos[0]); k++) {
        if (pl == (Py_ssize_t)strlen(protos[k]) && memcmp(s + i + 1, protos[k], (size_t)pl) == 0) {
            *u0 = start;
            *u1 = i;
            return 1;
        }
    }
    return 0;
}

/* does the URL [u, u+len) end with the extension [x, x+xl), a byte before it? */
static int ends_with_ext(const unsigned char *u, Py_ssize_t len, const unsigned char *x, Py_ssize_t xl) {
    if (len <= xl) return 0;
    const unsigned char *t = u + len - xl;
    for (Py_ssize_t i = 0; i < xl; i++) {
        unsigned char c = x[i], b = t[i];
        if (b == c) continue;
        /* (static_pattern: [Xx] for a letter, the letter upper-cased then as it is) */
        if (c >= 'a' && c <= 'z' && b == c - 32) continue;
        return 0;
    }
    return 1;
}

static PyObject *request_shapes(PyObject *self, PyObject *args) {
    Py_buffer ob, db;
    Py_ssize_t start, n;
    PyObject *exts;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnO", &ob, &db, &start, &n, &exts)) return NULL;
    PyObject *bits = NULL, *statics = NULL, *result = NULL;
    const int64_t *off = ob.buf;
    const unsigned char *data = db.buf;
    if (exts != Py_None) {
        if (!PyTuple_Check(exts)) {
            PyErr_SetString(PyExc_TypeError, "request_shapes: extensions must be a tuple of bytes or None");
            goto done;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(exts); k++) {
            if (!PyBytes_Check(PyTuple_GET_ITEM(exts, k))) {
                PyErr_SetString(PyExc_TypeError, "request_shapes: extensions must be a tuple of bytes or None");
                goto done;
            }
        }
    }
    if (start < 0 || n < 0 || !span_fits(start, n, (Py_ssize_t)sizeof(int64_t), ob.len) || !aligned(ob.buf, sizeof(int64_t))
        || (n + 1) > ob.len / (Py_ssize_t)sizeof(int64_t) - start) {
        PyErr_SetString(PyExc_ValueError, "request_shapes: offsets out of range, or not aligned");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = off[start + i], b = off[start + i + 1];
        if (a < 0 || b < a || b > db.len) {
            PyErr_SetString(PyExc_ValueError, "request_shapes: offsets out of range");
            goto done;
        }
    }
    bits = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    statics = PyList_New(0);
    if (!bits || !statics) goto done;
    unsigned char *vb = (unsigned char *)PyBytes_AS_STRING(bits);
    memset(vb, 0, (size_t)((n + 7) / 8));
    Py_ssize_t k = 0;  /* simple lines so far */
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *s = data + off[start + i];
        Py_ssize_t len = (Py_ssize_t)(off[start + i + 1] - off[start + i]), u0, u1;
        if (!simple_request(s, len, &u0, &u1)) continue;
        vb[i >> 3] |= (unsigned char)(1 << (i & 7));
        if (exts != Py_None) {
            for (Py_ssize_t x = 0; x < PyTuple_GET_SIZE(exts); x++) {
                PyObject *ext = PyTuple_GET_ITEM(exts, x);
                if (!ends_with_ext(s + u0, u1 - u0, (const unsigned char *)PyBytes_AS_STRING(ext),
                                   PyBytes_GET_SIZE(ext)))
                    continue;
                const unsigned char *q = memchr(s + u0, '?', (size_t)(u1 - u0));
                PyObject *item = Py_BuildValue("(ny#)", k, (const char *)(s + u0), (q ? q : s + u1) - (s + u0));
                if (!item || PyList_Append(statics, item) != 0) {
                    Py_XDECREF(item);
                    goto done;
                }
                Py_DECREF(item);
                break;
            }
        }
        k++;
    }
    result = PyTuple_Pack(2, bits, statics);
done:
    Py_XDECREF(bits);
    Py_XDECREF(statics);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&db);
    return result;
}

/* ---- what is learned of new request lines, stored ------------------------------------------------------------
 *
 * learn_store(raws, eps, intern, ep_of, static_of, page_of, front, statics): for each new request line raws[k] and
 * its endpoint eps[k] (two lists of one length): the endpoint interned (intern.setdefault(e, e)), ep_of[raw] = it,
 * raw added to the set page_of when the endpoint is in the set front, and static_of[raw] = the path of statics (a
 * list of (k, path), k increasing: request_shapes') for that k, else None.  What arrowscan.ArrowScanner.
 * _learn_requests did with a map, a zip, a compress and a dict.fromkeys (the same entries, in the same order).
 */
static PyObject *learn_store(PyObject *self, PyObject *args) {
    PyObject *raws, *eps, *intern, *ep_of, *static_of, *page_of, *front, *statics;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OO", &PyList_Type, &raws, &PyList_Type, &eps, &PyDict_Type, &intern,
                          &PyDict_Type, &ep_of, &PyDict_Type, &static_of, &PySet_Type, &page_of, &front, &statics))
        return NULL;
    if (!PyAnySet_Check(front) || (statics != Py_None && !PyList_Check(statics))) {
        PyErr_SetString(PyExc_TypeError, "learn_store: front must be a set, statics a list or None");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(raws);
    if (PyList_GET_SIZE(eps) != n) {
        PyErr_SetString(PyExc_ValueError, "learn_store: raws and eps differ in length");
        return NULL;
    }
    Py_ssize_t next = 0;  /* the next entry of statics */
    for (Py_ssize_t k = 0; k < n; k++) {
        if (k >= PyList_GET_SIZE(raws) || k >= PyList_GET_SIZE(eps)) {
            PyErr_SetString(PyExc_RuntimeError, "learn_store: the lists changed");
            return NULL;
        }
        PyObject *raw = PyList_GET_ITEM(raws, k), *e = PyList_GET_ITEM(eps, k);
        Py_INCREF(raw);
        Py_INCREF(e);  /* (held: its hash may run code that changes eps) */
        PyObject *one = PyDict_SetDefault(intern, e, e);  /* borrowed */
        Py_XINCREF(one);
        Py_DECREF(e);
        int in_front = one ? PySet_Contains(front, one) : -1;
        int bad = in_front < 0 || PyDict_SetItem(ep_of, raw, one) != 0 || (in_front && PySet_Add(page_of, raw) != 0);
        Py_XDECREF(one);
        PyObject *path = Py_None;
        if (!bad && statics != Py_None && next < PyList_GET_SIZE(statics)) {
            PyObject *item = PyList_GET_ITEM(statics, next);
            Py_ssize_t at;
            PyObject *p;
            Py_INCREF(item);  /* (held: an __index__ of k may run code that changes statics) */
            if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "nO", &at, &p)) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "learn_store: statics holds (k, path)");
                bad = 1;
            } else if (at < k) {
                PyErr_SetString(PyExc_ValueError, "learn_store: statics out of order or out of range");
                bad = 1;
            } else if (at == k) {
                path = p;
                next++;
            }
            Py_INCREF(path);  /* (held: the list may change while the dict runs code) */
            Py_DECREF(item);
        } else {
            Py_INCREF(path);
        }
        bad = bad || PyDict_SetItem(static_of, raw, path) != 0;
        Py_DECREF(path);
        Py_DECREF(raw);
        if (bad) return NULL;
    }
    if (statics != Py_None && next < PyList_GET_SIZE(statics)) {
        PyErr_SetString(PyExc_ValueError, "learn_store: statics out of order or out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- referers: the host each names, and which may carry an exploit ----------------------------------------------
 *
 * referer_hosts(referers) -> list: per referer (bytes), access._referer_host's answer: the referer trimmed of
 * " \t\n\v\f\r" at both ends ("-" when nothing is left) and matched at its start, as Python's re matches
 * access._HOST_OF_URL (case-insensitively, ASCII):
 *     [a-z][a-z0-9+.-]{0,15}://(?:[^/?#@\s]*@)?(\[[0-9a-f:.]*\]|[^/?#:@\s\[\]]+)
 * (the user part taken when the host after it matches, else the host read from right after "://", as the regex
 * backtracks), the host lower-cased (ASCII) without its final dots; None where it does not match.
 *
 * referer_hints(referers) -> list: per referer, whether classify._REFERER_HINT ([{%\\]|oast\.|interact\.sh,
 * case-insensitive) is found within its first AGENT_CLASSIFIED_BYTES (classify.referer_exploit's prefilter: a
 * referer without one carries no exploit).
 */
#define REFERER_HINT_BYTES 8192

static int re_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int c_alpha(unsigned char c) { return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
static int c_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* the host's end when a host of _HOST_OF_URL's group begins at x of [t, t+len), else -1 */
static Py_ssize_t host_end(const unsigned char *t, Py_ssize_t len, Py_ssize_t x) {
    if (x >= len) return -1;
    if (t[x] == '[') {
        Py_ssize_t k = x + 1;
        while (k < len && (is_hex(t[k]) || t[k] == ':' || t[k] == '.')) k++;
        return k < len && t[k] == ']' ? k + 1 : -1;  /* ('[' is out of the other alternative's class) */
    }
    Py_ssize_t k = x;
    while (k < len && !(t[k] == '/' || t[k] == '?' || t[k] == '#' || t[k] == ':' || t[k] == '@' || t[k] == '['
                        || t[k] == ']' || re_space(t[k])))
        k++;
    return k > x ? k : -1;
}

static PyObject *referer_host(const unsigned char *s, Py_ssize_t len) {
    while (len && re_space(s[0])) {
        s++;
        len--;
    }
    while (len && re_space(s[len - 1])) len--;
    if (!len || !c_alpha(s[0])) Py_RETURN_NONE;  /* (nothing left reads as "-": no letter either) */
    Py_ssize_t j = 1;
    while (j < len && j <= 15 && (c_alpha(s[j]) || c_digit(s[j]) || s[j] == '+' || s[j] == '.' || s[j] == '-')) j++;
    if (len - j < 3 || s[j] != ':' || s[j + 1] != '/' || s[j + 2] != '/') Py_RETURN_NONE;
    Py_ssize_t p = j + 3, q = p, x = -1, end = -1;
    while (q < len && !(s[q] == '/' || s[q] == '?' || s[q] == '#' || s[q] == '@' || re_space(s[q]))) q++;
    if (q < len && s[q] == '@' && (end = host_end(s, len, q + 1)) >= 0) x = q + 1;
    if (x < 0 && (end = host_end(s, len, p)) >= 0) x = p;
    if (x < 0) Py_RETURN_NONE;
    while (end > x && s[end - 1] == '.') end--;
    PyObject *out = PyBytes_FromStringAndSize(NULL, end - x);
    if (!out) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = x; i < end; i++) o[i - x] = (s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i];
    return out;
}

/* does [s, s+len) hold `word` (lower case) at i, case-insensitively (ASCII letters)? */
static int word_at(const unsigned char *s, Py_ssize_t len, Py_ssize_t i, const char *word, Py_ssize_t wl) {
    if (len - i < wl) return 0;
    for (Py_ssize_t k = 0; k < wl; k++) {
        unsigned char c = s[i + k], w = (unsigned char)word[k];
        if (c != w && !(w >= 'a' && w <= 'z' && c == w - 32)) return 0;
    }
    return 1;
}

static int referer_hint(const unsigned char *s, Py_ssize_t len) {
    if (len > REFERER_HINT_BYTES) len = REFERER_HINT_BYTES;  /* (search(referer, 0, endpos): a match inside) */
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == '{' || c == '%' || c == '\\') return 1;
        if ((c | 0x20) == 'o' && word_at(s, len, i, "oast.", 5)) return 1;
        if ((c | 0x20) == 'i' && word_at(s, len, i, "interact.sh", 11)) return 1;
    }
    return 0;
}

static PyObject *referers_map(PyObject *arg, int hosts) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "referers must be a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(arg)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "the referers changed");
            return NULL;
        }
        PyObject *x = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(x)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "referers must be a list of bytes");
            return NULL;
        }
        Py_INCREF(x);
        const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(x);
        PyObject *v;
        if (hosts) {
            v = referer_host(s, PyBytes_GET_SIZE(x));
        } else {
            v = referer_hint(s, PyBytes_GET_SIZE(x)) ? Py_True : Py_False;
            Py_INCREF(v);
        }
        Py_DECREF(x);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

static PyObject *referer_hosts(PyObject *self, PyObject *arg) {
    (void)self;
    return referers_map(arg, 1);
}

static PyObject *referer_hints(PyObject *self, PyObject *arg) {
    (void)self;
    return referers_map(arg, 0);
}

/* ---- time tokens keyed by their minute --------------------------------------------------------------------------
 *
 * minute_tokens(offsets, data, validity, n, width, s0, s1) -> (offsets, data, minutes, seconds) | None: for an Arrow
 * large_binary array of n time tokens (int64 offsets and data from index 0, validity bitmap or None), when every
 * valid token is `width` bytes long (and s1 - s0 == 2, 0 <= s0, s1 <= width): the tokens with bytes [s0, s1) made
 * "00" as a large_binary column's offsets and data (a null row empty), the distinct such tokens of the valid rows
 * and the distinct [s0, s1) slices of the valid rows (both lists of bytes, in order of first appearance).  What
 * arrowscan.ArrowScanner._minutes did with binary_length, min_max, binary_replace_slice, unique and binary_slice.
 * None when a valid token has another length, no row is valid, or the slice is not two bytes of a token.
 */
static PyObject *minute_tokens(PyObject *self, PyObject *args) {
    Py_buffer ob, db;
    PyObject *validity;
    Py_ssize_t n, width, s0, s1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*Onnnn", &ob, &db, &validity, &n, &width, &s0, &s1)) return NULL;
    Py_buffer vb;
    int has_bits = 0;
    PyObject *offs = NULL, *text = NULL, *mins = NULL, *secs = NULL, *result = NULL;
    Py_ssize_t *slots = NULL;
    unsigned char *seen_sec = NULL;
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &vb, PyBUF_SIMPLE) != 0) goto done;
        has_bits = 1;
    }
    if (n < 0 || n == PY_SSIZE_T_MAX || !span_fits(0, n + 1, (Py_ssize_t)sizeof(int64_t), ob.len)
        || (has_bits && !bits_fit(0, n, vb.len))
        || width < 0 || !aligned(ob.buf, sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "minute_tokens: the buffers are shorter than n rows, or not aligned");
        goto done;
    }
    const int64_t *off = ob.buf;
    const unsigned char *data = db.buf, *vbits = has_bits ? (const unsigned char *)vb.buf : NULL;
    Py_ssize_t valid = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (vbits && !bit_at(vbits, i)) continue;
        int64_t a = off[i], b = off[i + 1];
        if (a < 0 || b < a || b > db.len) {
            PyErr_SetString(PyExc_ValueError, "minute_tokens: offsets out of range");
            goto done;
        }
        if (b - a != width) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        valid++;
    }
    if (!valid || s0 < 0 || s1 != s0 + 2 || s1 > width || valid > PY_SSIZE_T_MAX / (width ? width : 1)) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    offs = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
    text = PyBytes_FromStringAndSize(NULL, valid * width);
    mins = PyList_New(0);
    secs = PyList_New(0);
    Py_ssize_t cap = 16;
    while (cap < 2 * valid) cap *= 2;
    slots = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));  /* a distinct token's row + 1 (0: empty) */
    seen_sec = PyMem_Calloc(65536, 1);
    if (!offs || !text || !mins || !secs || !slots || !seen_sec) {
        if (!slots || !seen_sec) PyErr_NoMemory();
        goto done;
    }
    int64_t *o = (int64_t *)PyBytes_AS_STRING(offs);
    unsigned char *t = (unsigned char *)PyBytes_AS_STRING(text);
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        o[i] = at;
        if (vbits && !bit_at(vbits, i)) continue;
        const unsigned char *src = data + off[i];
        unsigned char *dst = t + at;
        memcpy(dst, src, (size_t)width);
        unsigned int sec = (unsigned int)src[s0] << 8 | src[s0 + 1];
        if (!seen_sec[sec]) {
            seen_sec[sec] = 1;
            PyObject *x = PyBytes_FromStringAndSize((const char *)src + s0, 2);
            if (!x || PyList_Append(secs, x) != 0) {
                Py_XDECREF(x);
                goto done;
            }
            Py_DECREF(x);
        }
        dst[s0] = dst[s0 + 1] = '0';
        if (at && memcmp(dst - width, dst, (size_t)width) == 0) {  /* (a log's times come in order: the last one's) */
            at += width;
            continue;
        }
        uint64_t h = 0xcbf29ce484222325ULL;  /* FNV-1a */
        for (Py_ssize_t k = 0; k < width; k++) h = (h ^ dst[k]) * 0x100000001b3ULL;
        Py_ssize_t slot = (Py_ssize_t)(mix64(h) & (uint64_t)(cap - 1));
        for (;;) {
            Py_ssize_t r = slots[slot];
            if (!r) {
                slots[slot] = at / (width ? width : 1) + 1;
                PyObject *x = PyBytes_FromStringAndSize((const char *)dst, width);
                if (!x || PyList_Append(mins, x) != 0) {
                    Py_XDECREF(x);
                    goto done;
                }
                Py_DECREF(x);
                break;
            }
            if (memcmp(t + (r - 1) * width, dst, (size_t)width) == 0) break;
            slot = (slot + 1) & (cap - 1);
        }
        at += width;
    }
    o[n] = at;
    result = PyTuple_Pack(4, offs, text, mins, secs);
done:
    PyMem_Free(slots);
    PyMem_Free(seen_sec);
    Py_XDECREF(offs);
    Py_XDECREF(text);
    Py_XDECREF(mins);
    Py_XDECREF(secs);
    if (has_bits) PyBuffer_Release(&vb);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&db);
    return result;
}

/* ---- syslog_join: the plain lines of a syslog file of PostgreSQL's, joined (upkeeper.logs.pgsyslog.Joiner) ----
 *
 * syslog_join(buf, pos, offset, ident, flags, skip_before, first_offset, max_pending, times, pending, seen, idents,
 *             out, emit, message) -> (pos, first_offset, skipped, split, last_pid, last_msg, lines)
 *
 * Does what Joiner.feed does with the lines of buf from pos on (pos: a line start; buf: whole lines of a file of
 * traditional or RFC 3339 syslog lines, at `offset` of it), for as long as each line is of a form whose handling
 * it can prove the same as the Python's, and returns where it stopped (the start of the first line it did not
 * take, or len(buf)): the caller hands that line to the Python; and how many lines it took.  A line it takes:
 *
 *   TIME HOST TOKEN[PID]: MSG  or  TIME HOST TOKEN: MSG  (LINE_RX's match, TOKEN followed by '[' or ':': no
 *   facility.priority before it), TIME already in `times` (LINE_RX's tt -> as %t writes it), and
 *   - TOKEN is not `ident`: skipped, counted in `idents` (as feed counts it);
 *   - or MSG is `[SEQ-N] TEXT` (N = 1: a message's first chunk, not the next chunk of the backend's waiting one;
 *     without '#012' in TEXT unless a message cut into chunks was seen: `split`) or N is the next chunk of the
 *     backend's waiting message that this call began, and what Joiner._append does with it needs no regex (TEXT
 *     after a chunk that may have been cut inside a word starts with a blank or a tab).
 *
 * The backends' waiting messages it begins are kept here and put into `pending` (as `message(seq, chunk, parts,
 * time, offset, in_word, last)`, in the order the Python would have put them) when it returns; a waiting message
 * of `pending` that a line ends is emitted by `emit(pid, first_offset, split)` (Joiner._native_emit, which returns
 * first_offset), after the text emitted so far is appended to `out`.  It stops before a line that would put more
 * than max_pending messages in waiting (Joiner.line's eviction is the Python's).
 * flags: 1 need_time, 2 need_pid, 4 split.
 */

typedef struct {
    PyObject *pid, *ts, *text, *parts; /* owned; text: the first chunk's text; parts: a list once a chunk follows */
    const char *seq;
    Py_ssize_t seqlen, offset, last, chunk;
    int in_word, live;
} SyEntry;

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} SyBuf;

static int sybuf_put(SyBuf *b, const char *s, Py_ssize_t n) {
    if (n <= 0) return 0;
    if (b->n + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n) {
            if (cap > PY_SSIZE_T_MAX / 2) {
                PyErr_NoMemory();
                return -1;
            }
            cap *= 2;
        }
        char *p = PyMem_Realloc(b->p, (size_t)cap);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

static int sybuf_flush(SyBuf *b, PyObject *out) {
    if (!b->n) return 0;
    PyObject *o = PyBytes_FromStringAndSize(b->p, b->n);
    if (!o) return -1;
    int r = PyList_Append(out, o);
    Py_DECREF(o);
    b->n = 0;
    return r;
}

static int sy_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* \s of a bytes pattern */
static int sy_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int sy_digits(const unsigned char *s, Py_ssize_t i, Py_ssize_t e, int n) {
    if (i + n > e) return 0;
    for (int k = 0; k < n; k++)
        if (!sy_digit(s[i + k])) return 0;
    return 1;
}

/* the end of LINE_RX's tt group at line start i (line end e), or -1 where the line has no time of its forms */
static Py_ssize_t sy_time(const unsigned char *s, Py_ssize_t i, Py_ssize_t e) {
    Py_ssize_t j = i;
    if (j + 3 <= e && s[j] >= 'A' && s[j] <= 'Z' && s[j + 1] >= 'a' && s[j + 1] <= 'z' && s[j + 2] >= 'a' &&
        s[j + 2] <= 'z') {  /* Mmm {1,2}D{1,2} hh:mm:ss(.f+)? */
        j += 3;
        if (j >= e || s[j] != ' ') return -1;
        j++;
        if (j < e && s[j] == ' ') j++;
        if (j >= e || !sy_digit(s[j])) return -1;
        j++;
        if (j < e && sy_digit(s[j])) j++;
        if (j >= e || s[j] != ' ') return -1;
        j++;
    } else if (sy_digits(s, j, e, 4) && j + 11 <= e && s[j + 4] == '-' && sy_digits(s, j + 5, e, 2) &&
               s[j + 7] == '-' && sy_digits(s, j + 8, e, 2) && s[j + 10] == 'T') {  /* YYYY-MM-DDT */
        j += 11;
    } else {
        return -1;
    }
    if (!(sy_digits(s, j, e, 2) && j + 8 <= e && s[j + 2] == ':' && sy_digits(s, j + 3, e, 2) && s[j + 5] == ':' &&
          sy_digits(s, j + 6, e, 2)))
        return -1;
    const int rfc = sy_digit(s[i]);
    j += 8;
    if (j < e && s[j] == '.') {
        j++;
        if (j >= e || !sy_digit(s[j])) return -1;
        while (j < e && sy_digit(s[j])) j++;
    }
    if (rfc && j < e) {
        if (s[j] == 'Z') {
            j++;
        } else if (s[j] == '+' || s[j] == '-') {
            if (!sy_digits(s, j + 1, e, 2)) return -1;
            j += 3;
            if (j < e && s[j] == ':') j++;
            if (!sy_digits(s, j, e, 2)) return -1;
            j += 2;
        }
    }
    return j;
}

/* _in_word: as long as a chunk can be, with no whitespace after its first byte */
static int sy_in_word(const char *t, Py_ssize_t n) {
    if (n < 900 - 3) return 0;
    for (Py_ssize_t k = 1; k < n; k++)
        if (sy_space((unsigned char)t[k])) return 0;
    return 1;
}

static Py_ssize_t sy_find(const char *s, Py_ssize_t n, const char *pat, Py_ssize_t m) {
    for (Py_ssize_t k = 0; k + m <= n; k++) {
        const char *h = memchr(s + k, pat[0], (size_t)(n - m - k + 1));
        if (!h) return -1;
        k = h - s;
        if (memcmp(h, pat, (size_t)m) == 0) return k;
    }
    return -1;
}

/* the synthesized prefix (Joiner._synth) and ``text`` as Joiner._emit_one writes them */
static int sy_write(SyBuf *o, int flags, PyObject *ts, PyObject *pid, const char *t, Py_ssize_t n) {
    char synth[512];
    Py_ssize_t sl = 0;
    if (flags & 1) {
        Py_ssize_t l = PyBytes_GET_SIZE(ts);
        if (l > 200) goto too_long;  /* (not taken: see syslog_join) */
        memcpy(synth, PyBytes_AS_STRING(ts), (size_t)l);
        sl = l;
        synth[sl++] = ' ';
    }
    if (flags & 2) {
        Py_ssize_t l = PyBytes_GET_SIZE(pid);
        if (l > 200) goto too_long;
        synth[sl++] = '[';
        memcpy(synth + sl, PyBytes_AS_STRING(pid), (size_t)l);
        sl += l;
        synth[sl++] = ']';
        synth[sl++] = ' ';
    }
    while (n > 0 && t[n - 1] == '\n') n--;  /* .rstrip(b"\n") */
    if (!sl || !memchr(t, '\n', (size_t)n)) {
        if (sybuf_put(o, synth, sl) < 0 || sybuf_put(o, t, n) < 0) return -1;
    } else {  /* each line but a continuation line (a tab first) */
        Py_ssize_t k = 0;
        for (;;) {
            const char *nl = memchr(t + k, '\n', (size_t)(n - k));
            Py_ssize_t end = nl ? nl - t : n;
            if ((end == k || t[k] != '\t') && sybuf_put(o, synth, sl) < 0) return -1;
            if (sybuf_put(o, t + k, end - k) < 0) return -1;
            if (!nl) break;
            if (sybuf_put(o, "\n", 1) < 0) return -1;
            k = end + 1;
        }
    }
    return sybuf_put(o, "\n", 1);
too_long:
    PyErr_SetString(PyExc_ValueError, "syslog_join: a time or pid too long");
    return -1;
}

static int sy_emit(SyBuf *o, int flags, SyEntry *en, Py_ssize_t *first_offset) {
    int r;
    if (*first_offset < 0) *first_offset = en->offset;
    if (!en->parts) {
        r = sy_write(o, flags, en->ts, en->pid, PyBytes_AS_STRING(en->text), PyBytes_GET_SIZE(en->text));
    } else {
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        if (!empty) return -1;
        PyObject *j = PyObject_CallMethod(empty, "join", "O", en->parts);
        Py_DECREF(empty);
        if (!j) return -1;
        if (!PyBytes_Check(j)) {
            Py_DECREF(j);
            PyErr_SetString(PyExc_TypeError, "syslog_join: parts are not bytes");
            return -1;
        }
        r = sy_write(o, flags, en->ts, en->pid, PyBytes_AS_STRING(j), PyBytes_GET_SIZE(j));
        Py_DECREF(j);
    }
    en->live = 0;
    return r;
}


static void sy_clear(SyEntry *en) {
    Py_CLEAR(en->pid);
    Py_CLEAR(en->ts);
    Py_CLEAR(en->text);
    Py_CLEAR(en->parts);
}

/* text with each "#011" a tab (bytes.replace, left to right) */
static PyObject *sy_unescape(const char *t, Py_ssize_t n) {
    if (sy_find(t, n, "#011", 4) < 0) return PyBytes_FromStringAndSize(t, n);
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (!r) return NULL;
    char *d = PyBytes_AS_STRING(r);
    Py_ssize_t k = 0, m = 0;
    while (k < n) {
        if (t[k] == '#' && k + 4 <= n && memcmp(t + k, "#011", 4) == 0) {
            d[m++] = '\t';
            k += 4;
        } else {
            d[m++] = t[k++];
        }
    }
    if (_PyBytes_Resize(&r, m) < 0) return NULL;
    return r;
}

static PyObject *syslog_join(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t pos, offset, skip_before, first_offset, max_pending;
    int flags;
    PyObject *ident, *times, *pending, *seen, *idents, *out, *emit, *message;
    if (!PyArg_ParseTuple(args, "y*nnSinnnO!O!O!O!O!OO", &view, &pos, &offset, &ident, &flags, &skip_before,
                          &first_offset, &max_pending, &PyDict_Type, &times, &PyDict_Type, &pending, &PySet_Type,
                          &seen, &PyDict_Type, &idents, &PyList_Type, &out, &emit, &message))
        return NULL;
    const unsigned char *s = (const unsigned char *)view.buf;
    const Py_ssize_t len = view.len;
    const char *id = PyBytes_AS_STRING(ident);
    const Py_ssize_t idlen = PyBytes_GET_SIZE(ident);
    PyObject *result = NULL, *ctab = PyDict_New(), *last_pid = NULL, *ts = NULL, *pid = NULL, *text = NULL;
    SyEntry *ents = NULL;
    Py_ssize_t nent = 0, cap = 0, live = 0, skipped = 0, last_at = 0, last_end = 0, lines = 0;
    const unsigned char *tt_prev = NULL;
    Py_ssize_t tt_prev_len = 0;
    SyBuf o = {NULL, 0, 0};
    if (!ctab) goto done;
    if (pos < 0 || pos > len || (pos > 0 && s[pos - 1] != '\n')) {
        PyErr_SetString(PyExc_ValueError, "syslog_join: pos is not a line start of buf");
        goto done;
    }
    while (pos < len) {
        const unsigned char *nl = memchr(s + pos, '\n', (size_t)(len - pos));
        const Py_ssize_t e = nl ? nl - s : len, i = pos;
        /* LINE_RX: TIME HOST TOKEN[PID]: MSG or TIME HOST TOKEN: MSG */
        Py_ssize_t j = sy_time(s, i, e);
        if (j < 0 || j >= e || s[j] != ' ') goto stop;
        const Py_ssize_t ttend = j++;
        const Py_ssize_t h = j;
        while (j < e && !sy_space(s[j])) j++;
        if (j == h || j >= e || s[j] != ' ') goto stop;
        const Py_ssize_t tok = ++j;
        while (j < e && !sy_space(s[j]) && s[j] != '[' && s[j] != ':') j++;
        const Py_ssize_t toklen = j - tok;
        if (!toklen || j >= e) goto stop;
        Py_ssize_t p0 = -1, p1 = -1;
        if (s[j] == '[') {
            p0 = ++j;
            while (j < e && sy_digit(s[j])) j++;
            if (j == p0 || j - p0 > 64 || j >= e || s[j] != ']') goto stop;
            p1 = j++;
        }
        if (j >= e || s[j] != ':') goto stop;
        j++;
        if (j < e && s[j] == ' ') j++;
        const Py_ssize_t msg = j;
        if (toklen != idlen || memcmp(s + tok, id, (size_t)idlen) != 0) {  /* another program's line: counted */
            PyObject *name = PyBytes_FromStringAndSize((const char *)s + tok, toklen);
            if (!name) goto done;
            PyObject *c = PyDict_GetItemWithError(idents, name);
            if (!c && PyErr_Occurred()) {
                Py_DECREF(name);
                goto done;
            }
            if (c || PyDict_GET_SIZE(idents) < 20) {
                PyObject *one = PyLong_FromLong(1), *nv = NULL;
                if (one && c) {
                    nv = PyNumber_Add(c, one);
                    Py_DECREF(one);
                } else {
                    nv = one;  /* (its reference is nv's: a count of 0 made 1, the same cached object, and the old
                                * test of nv == one took one reference too many) */
                }
                if (!nv || PyDict_SetItem(idents, name, nv) < 0) {
                    Py_XDECREF(nv);
                    Py_DECREF(name);
                    goto done;
                }
                Py_DECREF(nv);
            }
            Py_DECREF(name);
            skipped++;
            lines++;
            pos = nl ? e + 1 : len;
            continue;
        }
        /* the time, as the Python's cache has it (one not in it: the Python reads the line, and caches it) */
        if (!(tt_prev && ttend - i == tt_prev_len && memcmp(tt_prev, s + i, (size_t)tt_prev_len) == 0)) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)s + i, ttend - i);
            if (!key) goto done;
            PyObject *v = PyDict_GetItemWithError(times, key);
            Py_DECREF(key);
            if (!v) {
                if (PyErr_Occurred()) goto done;
                goto stop;
            }
            if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) > 200) goto stop;
            Py_INCREF(v);
            Py_XSETREF(ts, v);
            tt_prev = s + i;
            tt_prev_len = ttend - i;
        }
        /* PostgreSQL's [SEQ-N] (Joiner._bracket; a prefix starting with '[' has no call here) */
        Py_ssize_t k = msg;
        if (k >= e || s[k] != '[') goto stop;  /* (and so no "message repeated N times") */
        const Py_ssize_t sq = ++k;
        while (k < e && sy_digit(s[k])) k++;
        const Py_ssize_t sqlen = k - sq;
        if (!sqlen || k >= e || s[k] != '-') goto stop;
        const Py_ssize_t n0 = ++k;
        while (k < e && s[k] == '0') k++;
        Py_ssize_t n = 0;
        while (k < e && sy_digit(s[k]) && n < 100000000) n = n * 10 + (s[k++] - '0');
        if (k == n0 || n >= 100000000 || k >= e || s[k] != ']') goto stop;
        k++;
        if (k < e) {
            if (s[k] != ' ') goto stop;
            k++;
        }
        const Py_ssize_t at = offset + i;
        pid = p0 >= 0 ? PyBytes_FromStringAndSize((const char *)s + p0, p1 - p0) : PyBytes_FromString("0");
        if (!pid) goto done;
        text = sy_unescape((const char *)s + k, e - k);
        if (!text) goto done;
        const char *t = PyBytes_AS_STRING(text);
        const Py_ssize_t tn = PyBytes_GET_SIZE(text);
        /* the backend's waiting message: one this call began, or the Python's */
        SyEntry *cur = NULL;
        PyObject *py_cur = NULL, *ix = PyDict_GetItemWithError(ctab, pid);
        if (ix) {
            cur = &ents[PyLong_AsSsize_t(ix)];
            if (!cur->live) cur = NULL;
        } else if (PyErr_Occurred()) {
            goto done;
        }
        if (!cur) {
            py_cur = PyDict_GetItemWithError(pending, pid);
            if (!py_cur && PyErr_Occurred()) goto done;
        }
        const unsigned char first = tn ? (unsigned char)t[0] : 0;
        const int blank = tn && (first == ' ' || first == '\v' || first == '\f' || first == '\r');
        if (n == 1) {  /* a message's first chunk */
            if (!(flags & 4) && sy_find(t, tn, "#012", 4) >= 0) goto stop;  /* (Joiner.newlines' regex) */
            if (py_cur) {  /* the next chunk of a chunk 0 (_continues): the Python's */
                PyObject *ch = PyObject_GetAttrString(py_cur, "chunk");
                if (!ch) goto done;
                long chv = PyLong_Check(ch) ? PyLong_AsLong(ch) : 0;
                Py_DECREF(ch);
                if (chv == -1 && PyErr_Occurred()) PyErr_Clear();
                if (chv == 0) goto stop;
            } else if (!cur && PyDict_GET_SIZE(pending) + live + 1 > max_pending) {
                goto stop;  /* (the Python evicts) */
            }
        } else if (!(cur && cur->seqlen == sqlen && memcmp(cur->seq, s + sq, (size_t)sqlen) == 0 &&
                     n == cur->chunk + 1 && (blank || first == '\t' || !cur->in_word))) {
            goto stop;  /* not the next chunk of a message begun here, or one only a regex tells */
        }
        if (n != 1) {  /* Joiner._append */
            if (!cur->parts) {
                cur->parts = PyList_New(1);
                if (!cur->parts) goto done;
                Py_INCREF(cur->text);
                PyList_SET_ITEM(cur->parts, 0, cur->text);
            }
            PyObject *part = text;
            if (blank) {
                Py_INCREF(part);
            } else {
                part = PyBytes_FromStringAndSize(NULL, tn + 1);
                if (!part) goto done;
                PyBytes_AS_STRING(part)[0] = '\n';
                memcpy(PyBytes_AS_STRING(part) + 1, t, (size_t)tn);
            }
            int r = PyList_Append(cur->parts, part);
            Py_DECREF(part);
            if (r < 0) goto done;
            flags |= 4;
            cur->chunk = n;
            cur->last = at;
            cur->in_word = sy_in_word(t, tn);
            Py_CLEAR(text);
        } else {
            if (cur) {
                int r = sy_emit(&o, flags, cur, &first_offset);
                sy_clear(cur);
                live--;
                if (r < 0) goto done;
            } else if (py_cur) {  /* the Python's message, written after what this call wrote so far */
                if (sybuf_flush(&o, out) < 0) goto done;
                PyObject *r = PyObject_CallFunction(emit, "Onn", pid, first_offset, (Py_ssize_t)((flags & 4) != 0));
                if (!r) goto done;
                first_offset = PyLong_AsSsize_t(r);
                Py_DECREF(r);
                if (first_offset == -1 && PyErr_Occurred()) goto done;
            }
            if (at < skip_before && PySet_Add(seen, pid) < 0) goto done;
            if (nent == cap) {
                Py_ssize_t nc = cap ? cap * 2 : 256;
                SyEntry *ne = PyMem_Realloc(ents, (size_t)nc * sizeof(SyEntry));
                if (!ne) {
                    PyErr_NoMemory();
                    goto done;
                }
                ents = ne;
                cap = nc;
            }
            PyObject *ixo = PyLong_FromSsize_t(nent);
            if (!ixo) goto done;
            int r = PyDict_SetItem(ctab, pid, ixo);
            Py_DECREF(ixo);
            if (r < 0) goto done;
            SyEntry *en = &ents[nent++];
            memset(en, 0, sizeof(*en));
            Py_INCREF(pid);
            en->pid = pid;
            Py_INCREF(ts);
            en->ts = ts;
            en->text = text;  /* (its reference) */
            text = NULL;
            en->seq = (const char *)s + sq;
            en->seqlen = sqlen;
            en->offset = en->last = at;
            en->chunk = 1;
            en->in_word = sy_in_word(t, tn);
            en->live = 1;
            live++;
        }
        last_at = msg;
        last_end = e;
        Py_XSETREF(last_pid, pid);  /* (its reference) */
        pid = NULL;
        lines++;
        pos = nl ? e + 1 : len;
    }
stop:
    Py_CLEAR(pid);
    Py_CLEAR(text);
    /* the waiting messages begun here, into the Python's pending (in the order it would have put them) */
    for (Py_ssize_t x = 0; x < nent; x++) {
        SyEntry *en = &ents[x];
        if (!en->live) continue;
        PyObject *parts = en->parts;
        if (parts) {
            Py_INCREF(parts);
        } else {
            parts = PyList_New(1);
            if (!parts) goto done;
            Py_INCREF(en->text);
            PyList_SET_ITEM(parts, 0, en->text);
        }
        PyObject *m = PyObject_CallFunction(message, "y#nOOnOn", en->seq, en->seqlen, en->chunk, parts, en->ts,
                                            en->offset, en->in_word ? Py_True : Py_False, en->last);
        Py_DECREF(parts);
        if (!m) goto done;
        int r = PyDict_SetItem(pending, en->pid, m);
        Py_DECREF(m);
        if (r < 0) goto done;
        en->live = 0;
    }
    if (sybuf_flush(&o, out) < 0) goto done;
    if (last_pid)
        result = Py_BuildValue("nnniOy#n", pos, first_offset, skipped, (flags & 4) != 0, last_pid,
                               (const char *)s + last_at, last_end - last_at, lines);
    else
        result = Py_BuildValue("nnniOOn", pos, first_offset, skipped, (flags & 4) != 0, Py_None, Py_None, lines);
done:
    for (Py_ssize_t x = 0; x < nent; x++) sy_clear(&ents[x]);
    PyMem_Free(ents);
    PyMem_Free(o.p);
    Py_XDECREF(ctab);
    Py_XDECREF(last_pid);
    Py_XDECREF(ts);
    Py_XDECREF(pid);
    Py_XDECREF(text);
    PyBuffer_Release(&view);
    return result;
}

/* line_faults(lines, fmt, date_kind, time_kind, date_tokens) -> (codes, pairs): why each line (a bytes object without
 * its newline, read as the line and its '\n') fails goaccess.GoAccessLineParser.parse, where that is sure: a byte per
 * line, 0 (not a line), 1 (the parser's) or 2 + the index in pairs of its (code, the specifier's letter), pairs in
 * the order first seen (so the Python side counts each with bytes.count, no step per line).  The walk is parse's (its format loop, _specifier, _token and the
 * validators valid_ip, parse_date, parse_time, valid_status, size_out_of_range), without a Python object per line:
 * an unparsable line cost the parser 5-9 us (a line of 30 KB, milliseconds).  Where this walk is not sure it says
 * FAULT_PARSER and the parser reads the line as before: a line that parses, one whose %x has more than 11 digits
 * (the parser tells whether localtime takes them), a %P %Y %X before a blank (maybe a list of values), a date or
 * time format other than nginx's.
 *   fmt          the GoAccess --log-format (to_goaccess(..., internal=True)), walked byte by byte as parse does
 *   date_kind    1: %d/%b/%Y, 2: %Y-%m-%d, else 0;  time_kind  1: %T, 2: %T%z, else 0
 *   date_tokens  parse's date_tokens (the blanks of the date format + 1)
 * The codes (goaccess.FAULT_KINDS names the LineError kind of each): */
enum {
    FAULT_SKIPPED = 0,   /* empty, or starts with '#': not a line (the scan's ignored) */
    FAULT_PARSER = 1,    /* the parser reads it */
    FAULT_ENDS = 2,      /* line ends before %c */
    FAULT_INVALID = 3,   /* invalid %c */
    FAULT_NUL = 4,       /* starts with NUL */
    FAULT_FORMAT = 5,    /* whitespace after % in the format */
    FAULT_NO_HOST = 6,
    FAULT_NO_DATE = 7,
    FAULT_NO_REQUEST = 8,
    FAULT_SIZE = 9,      /* %b out of range */
    FAULT_EMPTY = 10,    /* empty %c (%U) */
};

typedef struct {
    const unsigned char *s;
    Py_ssize_t len;  /* the bytes in s */
    Py_ssize_t n;    /* len, + 1 when the line has its '\n' (the byte at len, not in s) */
} FLine;

static int f_at(const FLine *l, Py_ssize_t i) { return i < l->len ? l->s[i] : '\n'; }  /* (i < n) */

static int f_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

/* bytes.find of one byte c from pos: its index, or -1 */
static Py_ssize_t f_find(const FLine *l, Py_ssize_t pos, int c) {
    if (pos < l->len) {
        const unsigned char *p = memchr(l->s + pos, c, (size_t)(l->len - pos));
        if (p) return p - l->s;
    }
    if (c == '\n' && l->n > l->len && pos <= l->len) return l->len;
    return -1;
}

/* GoAccessLineParser._token: 0 (None) or 1 with the trimmed token [*a, *b) and the position after it in *next */
static int f_token(const FLine *l, Py_ssize_t pos, int delim, int cnt, Py_ssize_t *a, Py_ssize_t *b,
                   Py_ssize_t *next) {
    Py_ssize_t n = l->n, i = pos;
    int idx = 0;
    if (delim >= 0 && f_find(l, pos, delim) < 0) return 0;
    for (;;) {
        int c = i < n ? f_at(l, i) : -1;
        if (c == delim && delim >= 0) idx++;
        if ((c == delim && delim >= 0 && cnt == idx) || c == -1) {
            Py_ssize_t x = pos, y = i;
            while (x < y && f_ws(f_at(l, x))) x++;
            while (y > x && f_ws(f_at(l, y - 1))) y--;
            *a = x;
            *b = y;
            *next = i;
            return 1;
        }
        if (c == '\\') {
            i++;
            if (i >= n) return 0;
        }
        i++;
    }
}

static int f_digit(int c) { return c >= '0' && c <= '9'; }

/* a run of 1..max digits at *i (blanks before it: \s*) and its value; 0 when there is none */
static int f_num(const FLine *l, Py_ssize_t *i, Py_ssize_t e, int max, int blanks, long *v) {
    Py_ssize_t j = *i;
    if (blanks)
        while (j < e && f_ws(f_at(l, j))) j++;
    int k = 0;
    long x = 0;
    while (j < e && f_digit(f_at(l, j))) {
        if (++k > max) return 0;
        x = x * 10 + (f_at(l, j) - '0');
        j++;
    }
    if (!k) return 0;
    *i = j;
    *v = x;
    return 1;
}

static const char *const F_MONTHS[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec", "january", "february", "march", "april", "may", "june", "july",
                                       "august", "september", "october", "november", "december"};

/* parse_date (1: valid, 0: not) */
static int f_date(const FLine *l, Py_ssize_t a, Py_ssize_t b, int kind) {
    Py_ssize_t i = a;
    long d, m = 0, y;
    if (kind == 1) {  /* \s*(\d{1,2})/([A-Za-z]+)/\s*(\d{1,4}), fullmatch; a month name */
        if (!f_num(l, &i, b, 2, 1, &d) || i >= b || f_at(l, i) != '/') return 0;
        Py_ssize_t w = ++i;
        while (i < b && ((f_at(l, i) | 0x20) >= 'a' && (f_at(l, i) | 0x20) <= 'z')) i++;
        Py_ssize_t wl = i - w;
        if (!wl || i >= b || f_at(l, i) != '/') return 0;
        i++;
        if (!f_num(l, &i, b, 4, 1, &y) || i != b) return 0;
        for (int k = 0; k < 24 && !m; k++) {
            const char *name = F_MONTHS[k];
            if ((Py_ssize_t)strlen(name) != wl) continue;
            int same = 1;
            for (Py_ssize_t q = 0; q < wl && same; q++) same = (f_at(l, w + q) | 0x20) == name[q];
            if (same) m = k % 12 + 1;
        }
        if (!m) return 0;
    } else {  /* \s*(\d{1,4})-\s*(\d{1,2})-\s*(\d{1,2}), fullmatch; month 1-12 */
        if (!f_num(l, &i, b, 4, 1, &y) || i >= b || f_at(l, i) != '-') return 0;
        i++;
        if (!f_num(l, &i, b, 2, 1, &m) || i >= b || f_at(l, i) != '-') return 0;
        i++;
        if (!f_num(l, &i, b, 2, 1, &d) || i != b) return 0;
        if (m < 1 || m > 12) return 0;
    }
    return d >= 1 && d <= 31;
}

/* parse_time (1: valid, 0: not) */
static int f_time(const FLine *l, Py_ssize_t a, Py_ssize_t b, int kind) {
    Py_ssize_t i = a;
    long h, mi, s;
    if (!f_num(l, &i, b, 2, 1, &h) || i >= b || f_at(l, i) != ':') return 0;
    i++;
    if (!f_num(l, &i, b, 2, 1, &mi) || i >= b || f_at(l, i) != ':') return 0;
    i++;
    if (!f_num(l, &i, b, 2, 1, &s)) return 0;
    if (kind == 2) {  /* \s*(?:Z|[+-]\d\d(?::?[0-5]\d)?) */
        while (i < b && f_ws(f_at(l, i))) i++;
        if (i < b && f_at(l, i) == 'Z') {
            i++;
        } else {
            if (i >= b || (f_at(l, i) != '+' && f_at(l, i) != '-')) return 0;
            i++;
            if (b - i < 2 || !f_digit(f_at(l, i)) || !f_digit(f_at(l, i + 1))) return 0;
            i += 2;
            if (i < b) {
                if (f_at(l, i) == ':') i++;
                if (b - i < 2 || f_at(l, i) < '0' || f_at(l, i) > '5' || !f_digit(f_at(l, i + 1))) return 0;
                i += 2;
            }
        }
    }
    if (i != b) return 0;
    return h <= 23 && mi <= 59 && s <= 61;
}

/* [+-]?\d+ over all of [a, b): 1 with *neg and the digits' start, else 0 */
static int f_signed(const FLine *l, Py_ssize_t a, Py_ssize_t b, int *neg, Py_ssize_t *digits) {
    *neg = 0;
    if (a < b && (f_at(l, a) == '+' || f_at(l, a) == '-')) *neg = f_at(l, a++) == '-';
    if (a >= b) return 0;
    for (Py_ssize_t i = a; i < b; i++)
        if (!f_digit(f_at(l, i))) return 0;
    *digits = a;
    return 1;
}

/* valid_status: [+-]?\d+ and 100 <= value <= 599 */
static int f_status(const FLine *l, Py_ssize_t a, Py_ssize_t b) {
    int neg;
    Py_ssize_t i;
    if (!f_signed(l, a, b, &neg, &i)) return 0;
    while (i < b && f_at(l, i) == '0') i++;
    if (b - i > 3) return 0;
    long v = 0;
    for (; i < b; i++) v = v * 10 + (f_at(l, i) - '0');
    if (neg) v = -v;
    return v >= 100 && v <= 599;
}

/* size_out_of_range: more than 19 bytes, [+-]?\d+, beyond 2**64 - 1 */
static int f_size_out(const FLine *l, Py_ssize_t a, Py_ssize_t b) {
    static const char ull_max[] = "18446744073709551615";
    int neg;
    Py_ssize_t i;
    if (b - a <= 19 || !f_signed(l, a, b, &neg, &i)) return 0;
    while (i < b && f_at(l, i) == '0') i++;
    if (b - i != 20) return b - i > 20;
    for (int k = 0; k < 20; k++, i++)
        if (f_at(l, i) != ull_max[k]) return f_at(l, i) > ull_max[k];
    return 0;
}

static const char *const F_METHODS[] = {
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT", "PATCH", "PROPFIND", "PROPPATCH", "MKCOL",
    "COPY", "MOVE", "LOCK", "UNLOCK", "VERSION-CONTROL", "REPORT", "CHECKOUT", "CHECKIN", "UNCHECKOUT", "MKWORKSPACE",
    "UPDATE", "LABEL", "MERGE", "BASELINE-CONTROL", "MKACTIVITY", "ORDERPATCH"};
static const char *const F_PROTOCOLS[] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"};

/* extract_method, extract_protocol: the first ``within`` bytes of [a, b), upper-cased (ASCII), start with one */
static int f_prefix(const FLine *l, Py_ssize_t a, Py_ssize_t b, const char *const *words, size_t count,
                    Py_ssize_t within) {
    if (b - a > within) b = a + within;
    for (size_t k = 0; k < count; k++) {
        Py_ssize_t wl = (Py_ssize_t)strlen(words[k]), q = 0;
        if (wl > b - a) continue;
        for (; q < wl; q++) {
            int c = f_at(l, a + q);
            if (c >= 'a' && c <= 'z') c -= 0x20;
            if (c != words[k][q]) break;
        }
        if (q == wl) return 1;
    }
    return 0;
}

/* valid_ip: ASCII, and inet_pton takes it as IPv4 or IPv6 (none of 64 bytes or more: an address inet_pton takes
 * has at most 45, INET6_ADDRSTRLEN - 1, the text of a JSON log's first field has more) */
static int f_ip(const FLine *l, Py_ssize_t a, Py_ssize_t b) {
    char tmp[64];
    unsigned char out[16];
    if (b - a >= (Py_ssize_t)sizeof(tmp)) return 0;
    for (Py_ssize_t i = a; i < b; i++) {
        int c = f_at(l, i);
        if (c >= 0x80 || c == 0) return 0;
        tmp[i - a] = (char)c;
    }
    tmp[b - a] = 0;
    return inet_pton(AF_INET, tmp, out) == 1 || inet_pton(AF_INET6, tmp, out) == 1;
}

/* the code and letter of one line (see line_faults) */
static int line_fault(const FLine *l0, const unsigned char *fmt, Py_ssize_t flen, int date_kind, int time_kind,
                      int date_tokens, int *letter) {
    FLine line = *l0;
    const FLine *l = &line;
    *letter = 0;
    if (!line.len || line.s[0] == '#') return FAULT_SKIPPED;
    const unsigned char *z = memchr(line.s, 0, (size_t)line.len);
    if (z) {  /* cut at the NUL, without its newline */
        if (z == line.s) return FAULT_NUL;
        line.len = line.n = z - line.s;
    }
    Py_ssize_t n = line.n, pos = 0;
    int perc = 0, host = 0, date = 0, request = 0;
    for (Py_ssize_t i = 0; i < flen; i++) {
        int ch = fmt[i];
        if (ch == '%') {
            perc++;
            continue;
        }
        if (pos < n && f_at(l, pos) == '\n') break;
        if (!perc) {
            pos++;  /* a literal: skipped without comparing */
            continue;
        }
        perc = 0;
        *letter = ch;
        if (f_ws(ch)) return FAULT_FORMAT;
        if (pos >= n) return FAULT_ENDS;
        int delim = i + 1 < flen ? fmt[i + 1] : -1;
        if (ch == '^') {
            if (delim < 0) {
                pos = line.n;
            } else {
                Py_ssize_t j = f_find(l, pos, delim);
                if (j >= 0) pos = j;
            }
            continue;
        }
        if ((ch == 'P' || ch == 'Y' || ch == 'X') && delim == ' ') return FAULT_PARSER;  /* (a list of values) */
        if ((ch == 'd' && !date_kind) || (ch == 't' && !time_kind)) return FAULT_PARSER;
        int cnt = ch == 'd' ? date_tokens : 1;
        if (ch == 'h' && f_at(l, pos) == '[' && pos + 1 < n) {
            pos++;
            delim = ']';
        }
        Py_ssize_t a, b, next;
        int got = f_token(l, pos, delim, cnt, &a, &b, &next);
        if (!got) {
            if (ch == 'R' || ch == 'u' || ch == 'P' || ch == 'Y' || ch == 'X') continue;  /* (pos stays) */
            return FAULT_ENDS;
        }
        pos = next;
        if (ch == 'h') {
            if (!f_ip(l, a, b)) return FAULT_INVALID;
            host = 1;
        } else if (ch == 'd') {
            if (!f_date(l, a, b, date_kind)) return FAULT_INVALID;
            date = 1;
        } else if (ch == 't') {
            if (!f_time(l, a, b, time_kind)) return FAULT_INVALID;
        } else if (ch == 'x') {  /* parse_epoch: digits only (up to 11 of them, a time before the year 5000, a time
                                  * localtime tells; past that the parser says) */
            if (a == b) return FAULT_INVALID;
            for (Py_ssize_t q = a; q < b; q++)
                if (!f_digit(f_at(l, q))) return FAULT_INVALID;
            if (b - a > 11) return FAULT_PARSER;
            date = 1;
        } else if (ch == 'm') {
            if (!f_prefix(l, a, b, F_METHODS, sizeof(F_METHODS) / sizeof(F_METHODS[0]), 16)) return FAULT_INVALID;
        } else if (ch == 'U') {
            if (a == b) return FAULT_EMPTY;
            request = 1;  /* (_compose: the URL makes the request) */
        } else if (ch == 'H') {
            if (!f_prefix(l, a, b, F_PROTOCOLS, sizeof(F_PROTOCOLS) / sizeof(F_PROTOCOLS[0]), 8)) return FAULT_INVALID;
        } else if (ch == 'r') {
            request = 1;
        } else if (ch == 's') {
            if (!f_status(l, a, b)) return FAULT_INVALID;
        } else if (ch == 'b') {
            if (f_size_out(l, a, b)) return FAULT_SIZE;
        }
    }
    *letter = 0;
    if (!host) return FAULT_NO_HOST;
    if (!date) return FAULT_NO_DATE;
    if (!request) return FAULT_NO_REQUEST;
    return FAULT_PARSER;  /* it parses: the parser makes its row */
}

static PyObject *line_faults(PyObject *self, PyObject *args) {
    PyObject *lines;
    Py_buffer fmt;
    int date_kind, time_kind, date_tokens;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!y*iii", &PyList_Type, &lines, &fmt, &date_kind, &time_kind, &date_tokens))
        return NULL;
    PyObject *out = NULL, *codes = NULL, *pairs = NULL;
    unsigned char index[FAULT_EMPTY + 1][256];  /* (code, letter) -> its byte in codes (0: none yet) */
    int next = 2;
    memset(index, 0, sizeof(index));
    if (date_kind < 0 || date_kind > 2 || time_kind < 0 || time_kind > 2 || date_tokens < 1) {
        PyErr_SetString(PyExc_ValueError, "bad date or time kind");
        goto done;
    }
    Py_ssize_t count = PyList_GET_SIZE(lines);
    codes = PyBytes_FromStringAndSize(NULL, count);
    pairs = PyList_New(0);
    if (!codes || !pairs) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(codes);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = PyList_GET_ITEM(lines, k);  /* (no call back into Python below: the list cannot change) */
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "line_faults takes a list of bytes");
            goto done;
        }
        FLine l = {(const unsigned char *)PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), PyBytes_GET_SIZE(item) + 1};
        int letter = 0;
        int code = line_fault(&l, fmt.buf, fmt.len, date_kind, time_kind, date_tokens, &letter);
        if (code >= 2) {  /* its pair's byte: the next free one (there are fewer than 254 pairs: 9 codes, a letter
                           * only with three of them, one of which takes six letters; the parser's, were they taken) */
            unsigned char *at = &index[code <= FAULT_EMPTY ? code : FAULT_PARSER][letter & 0xff];
            if (!*at && next < 256) {
                PyObject *pair = Py_BuildValue("(ii)", code, letter);
                if (!pair || PyList_Append(pairs, pair) != 0) {
                    Py_XDECREF(pair);
                    goto done;
                }
                Py_DECREF(pair);
                *at = (unsigned char)next++;
            }
            code = *at ? *at : FAULT_PARSER;
        }
        o[k] = (unsigned char)code;
    }
    out = PyTuple_Pack(2, codes, pairs);
done:
    Py_XDECREF(codes);
    Py_XDECREF(pairs);
    PyBuffer_Release(&fmt);
    return out;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS, "cut(buf, prog, anchors) -> (n, valid, n_ok, rejected, starts, columns)"},
    {"endpoints", endpoints, METH_VARARGS,
     "endpoints(offsets, data, start, n, endpoint_max) -> (endpoints, words, url_offsets, url_data)"},
    {"request_keys", request_keys, METH_VARARGS, "request_keys(lines) -> (keys, canon, url_offsets, url_data)"},
    {"path_counts", path_counts, METH_VARARGS, "path_counts(counts) -> {path: hits}"},
    {"top_candidates", top_candidates, METH_VARARGS,
     "top_candidates(counts, n) -> [(key, count)] | None: the items whose count reaches the n-th highest"},
    {"path_top", path_top, METH_VARARGS,
     "path_top(counts, others, n) -> [(path, hits)] | None: the paths whose hits (all_paths') reach the n-th highest"},
    {"add_counts", add_counts, METH_VARARGS, "add_counts(into, other): Counter.update(other) of two dicts"},
    {"count_rows", count_rows, METH_VARARGS,
     "count_rows(into, keys, indices, offset, length, validity): Counter.update(keys[i] for each row's index i)"},
    {"collapse_lists", collapse_lists, METH_VARARGS,
     "collapse_lists(buf, quotes) -> bytes | None: the blanks of lists of upstream values made 0xA0"},
    {"combos", combos, METH_VARARGS,
     "combos(cols, keep, count, into) -> (values, counts) | None: the distinct combinations of coded columns"},
    {"request_ids", request_ids, METH_VARARGS,
     "request_ids(lines, ep_of, static_of, ep_ids, ep_list) -> (ids, statics, any_static)"},
    {"request_shapes", request_shapes, METH_VARARGS,
     "request_shapes(offsets, data, start, n, extensions) -> (simple, statics)"},
    {"learn_store", learn_store, METH_VARARGS,
     "learn_store(raws, eps, intern, ep_of, static_of, page_of, front, statics): new request lines stored"},
    {"referer_hosts", referer_hosts, METH_O, "referer_hosts(referers) -> [host or None]: access._referer_host of each"},
    {"referer_hints", referer_hints, METH_O,
     "referer_hints(referers) -> [bool]: classify._REFERER_HINT found in each referer's first 8192 bytes"},
    {"minute_tokens", minute_tokens, METH_VARARGS,
     "minute_tokens(offsets, data, validity, n, width, s0, s1) -> (offsets, data, minutes, seconds) | None"},
    {"syslog_join", syslog_join, METH_VARARGS,
     "syslog_join(buf, pos, offset, ident, flags, skip_before, first_offset, max_pending, times, pending, seen, "
     "idents, out, emit, message) -> (pos, first_offset, skipped, split, last_pid, last_msg, lines)"},
    {"line_faults", line_faults, METH_VARARGS,
     "line_faults(lines, fmt, date_kind, time_kind, date_tokens) -> (codes, pairs): why lines fail the line parser"},
    {"unquote", unquote, METH_O, "unquote(b) -> bytes: urllib.parse.unquote_to_bytes(b) of a bytes-like b"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cut", "The access-log line cut in C.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cut(void) { return PyModule_Create(&module); }
