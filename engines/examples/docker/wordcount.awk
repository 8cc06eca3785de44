# wordcount.awk: counts the words and lines of the "text" member of a JSON
# object. Input documented and handled: a JSON object (any layout, any other
# members, nested values allowed) whose member "text" is a string; the string
# escapes \" \\ \/ \b \f \n \r \t \uXXXX are decoded. Words are maximal runs
# of characters other than space, \t, \n, \r, \f, \v (as wc -w); lines are the
# number of \n characters (as wc -l). Output: {"words":W,"lines":L}.
# The document is split into a character array once (busybox awk's substr
# is linear in the string length, which would make the scan quadratic); this
# costs about 100 bytes of memory per input byte, so keep inputs to a few MiB.
# Called with -v mode=cold (whole stdin is one document) or mode=jsonl (one
# document per line, one result line each, flushed).

function fail(msg) {
    printf "wordcount: %s\n", msg > "/dev/stderr"
    failed = 1
    exit 2
}

function skip_ws(   c) {
    while (pos <= n) {
        c = ch[pos]
        if (c != " " && c != "\t" && c != "\n" && c != "\r") return
        pos++
    }
}

# Counts one decoded character into words/lines when counting.
function count_char(c) {
    if (c == "\n") lines++
    if (c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\f" || c == "\v") {
        in_word = 0
    } else if (!in_word) {
        in_word = 1
        words++
    }
}

# Parses the string starting at pos (which must hold a quote). Returns its raw
# text when keep is set (used for member names), and counts its decoded
# characters when counting is set.
function parse_string(keep, counting,   c, e, h, start, out) {
    if (ch[pos] != "\"") fail("expected a string at offset " pos)
    pos++
    start = pos
    out = ""
    while (pos <= n) {
        c = ch[pos]
        if (c == "\"") {
            if (keep) out = substr(s, start, pos - start)
            pos++
            return out
        }
        if (c == "\\") {
            e = ch[pos + 1]
            if (e == "u") {
                h = tolower(ch[pos + 2] ch[pos + 3] ch[pos + 4] ch[pos + 5])
                if (h !~ /^[0-9a-f][0-9a-f][0-9a-f][0-9a-f]$/) fail("bad \\u escape at offset " pos)
                if (h == "0009") c = "\t"
                else if (h == "000a") c = "\n"
                else if (h == "000d") c = "\r"
                else if (h == "000c") c = "\f"
                else if (h == "000b") c = "\v"
                else if (h == "0020") c = " "
                else c = "x"
                pos += 6
            } else {
                if (e == "n") c = "\n"
                else if (e == "t") c = "\t"
                else if (e == "r") c = "\r"
                else if (e == "f") c = "\f"
                else if (e == "b") c = "x"
                else if (e == "\"" || e == "\\" || e == "/") c = e
                else fail("bad escape at offset " pos)
                pos += 2
            }
            if (counting) count_char(c)
            continue
        }
        if (counting) count_char(c)
        pos++
    }
    fail("unterminated string")
}

# Skips any JSON value at pos (strings are scanned so brackets in them are
# not mistaken for structure).
function skip_value(   c, depth) {
    skip_ws()
    c = ch[pos]
    if (c == "\"") { parse_string(0, 0); return }
    if (c == "{" || c == "[") {
        depth = 0
        while (pos <= n) {
            c = ch[pos]
            if (c == "\"") { parse_string(0, 0); continue }
            if (c == "{" || c == "[") depth++
            else if (c == "}" || c == "]") {
                depth--
                if (depth == 0) { pos++; return }
            }
            pos++
        }
        fail("unterminated container")
    }
    # number, true, false or null
    if (c !~ /[-0-9tfn]/) fail("unexpected character at offset " pos)
    while (pos <= n) {
        c = ch[pos]
        if (c == "," || c == "}" || c == "]" || c == " " || c == "\t" || c == "\n" || c == "\r") return
        pos++
    }
}

function process(doc,   key, found, c) {
    s = doc; delete ch; n = split(s, ch, ""); pos = 1
    words = 0; lines = 0; in_word = 0; found = 0
    skip_ws()
    if (ch[pos] != "{") fail("input is not a JSON object")
    pos++
    skip_ws()
    if (ch[pos] == "}") {
        pos++
    } else {
        while (1) {
            skip_ws()
            key = parse_string(1, 0)
            skip_ws()
            if (ch[pos] != ":") fail("expected ':' at offset " pos)
            pos++
            skip_ws()
            if (key == "text") {
                if (ch[pos] != "\"") fail("\"text\" is not a string")
                words = 0; lines = 0; in_word = 0
                parse_string(0, 1)
                found = 1
            } else {
                skip_value()
            }
            skip_ws()
            c = ch[pos]
            pos++
            if (c == "}") break
            if (c != ",") fail("expected ',' or '}' at offset " (pos - 1))
        }
    }
    skip_ws()
    if (pos <= n) fail("trailing data after the object")
    if (!found) fail("missing member \"text\"")
    printf "{\"words\":%d,\"lines\":%d}\n", words, lines
    fflush()
}

mode == "jsonl" {
    if ($0 ~ /^[ \t\r]*$/) next
    process($0)
    next
}

{ doc = doc $0 "\n" }

END {
    if (failed || mode == "jsonl") exit failed ? 2 : 0
    process(doc)
}
