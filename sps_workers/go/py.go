package main

// Python's text forms, so detail strings read exactly as the Python workers write them
// (sps_workers/scoring_op.py, serving/models/spec.py, crayfish/tensor.py).

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// pyRepr is repr(str): single quotes unless the text has one and no double quote.
func pyRepr(s string) string {
	q := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteRune(q)
	for _, c := range s {
		switch {
		case c == q || c == '\\':
			b.WriteRune('\\')
			b.WriteRune(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == utf8.RuneError || c < 0x20 || c == 0x7f || (c != ' ' && !unicode.IsPrint(c)):
			switch {
			case c <= 0xff:
				fmt.Fprintf(&b, `\x%02x`, c)
			case c <= 0xffff:
				fmt.Fprintf(&b, `\u%04x`, c)
			default:
				fmt.Fprintf(&b, `\U%08x`, c)
			}
		default:
			b.WriteRune(c)
		}
	}
	b.WriteRune(q)
	return b.String()
}

// pyTuple is str(tuple) of ints: (), (5,), (1, 784).
func pyTuple(xs []int64) string {
	if len(xs) == 1 {
		return "(" + strconv.FormatInt(xs[0], 10) + ",)"
	}
	return "(" + joinInts(xs) + ")"
}

// pyList is str(list) of ints: [], [1, 1, 783].
func pyList(xs []int64) string { return "[" + joinInts(xs) + "]" }

// pyStrList is str(list) of strings: ['a', 'b'].
func pyStrList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = pyRepr(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func joinInts(xs []int64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(parts, ", ")
}

// pyHead is s[:n] by code points.
func pyHead(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
