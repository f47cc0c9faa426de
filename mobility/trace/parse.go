package trace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrSyntax is wrapped by every *ParseError, so that callers can test for
// a malformed trace with errors.Is without knowing the details.
var ErrSyntax = errors.New("trace: malformed trace")

// ParseError reports a malformed line: where it is and what was expected.
type ParseError struct {
	File string // the file's name, if known
	Line int    // 1-based
	Col  int    // 1-based byte column of the offending token; 0 for the whole line
	Msg  string // what was wrong, and what was expected instead
}

func (e *ParseError) Error() string {
	where := "line " + strconv.Itoa(e.Line)
	if e.Col > 0 {
		where += ", column " + strconv.Itoa(e.Col)
	}
	if e.File != "" {
		where = e.File + ": " + where
	}
	return "trace: " + where + ": " + e.Msg
}

// Unwrap returns ErrSyntax.
func (e *ParseError) Unwrap() error { return ErrSyntax }

// Limits that keep every value far from overflowing time.Duration and
// every decimal exactly representable, so that traces survive a round trip
// through WriteTo and Parse unchanged.
const (
	maxSeconds  = 1_000_000          // times: about 11.5 days
	maxMillis   = 1_000_000_000      // durations: the same span
	maxMbps     = 1_000_000          // 1 Tbit/s
	maxQueue    = 1 << 30            // bytes
	maxLineSize = 64 * 1024          // bytes per line
	errLineLong = "line is too long" // shared by the scanner and the fuzz test
)

// linkKey describes one key of the link event.
type linkKey struct {
	name  string
	field Field
	// parse stores the value into l, or returns what was expected.
	parse  func(l *Link, v string) error
	copy   func(dst, src *Link)
	format func(l *Link) string
}

var linkKeys = []linkKey{
	durationKey("rtt_ms", FieldRTT, func(l *Link) *time.Duration { return &l.RTT }),
	durationKey("jitter_ms", FieldJitter, func(l *Link) *time.Duration { return &l.Jitter }),
	probKey("loss", FieldLoss, func(l *Link) *float64 { return &l.Loss }),
	{
		name: "rate_mbps", field: FieldRate,
		parse: func(l *Link, v string) error {
			r, ok := parseFixed(v, 6, maxMbps)
			if !ok {
				return errors.New("expected a rate in Mbit/s, like 12.5 (0 for unlimited)")
			}
			l.Rate = r
			return nil
		},
		copy:   func(d, s *Link) { d.Rate = s.Rate },
		format: func(l *Link) string { return formatFixed(l.Rate, 6, 0) },
	},
	{
		name: "queue_bytes", field: FieldQueue,
		parse: func(l *Link, v string) error {
			q, ok := parseFixed(v, 0, maxQueue)
			if !ok {
				return fmt.Errorf("expected a whole number of bytes up to %d", maxQueue)
			}
			l.QueueBytes = int(q)
			return nil
		},
		copy:   func(d, s *Link) { d.QueueBytes = s.QueueBytes },
		format: func(l *Link) string { return strconv.Itoa(l.QueueBytes) },
	},
	probKey("burst_enter", FieldBurstEnter, func(l *Link) *float64 { return &l.BurstEnter }),
	probKey("burst_exit", FieldBurstExit, func(l *Link) *float64 { return &l.BurstExit }),
	probKey("burst_loss", FieldBurstLoss, func(l *Link) *float64 { return &l.BurstLoss }),
	probKey("reorder", FieldReorder, func(l *Link) *float64 { return &l.Reorder }),
}

func durationKey(name string, f Field, ptr func(*Link) *time.Duration) linkKey {
	return linkKey{
		name: name, field: f,
		parse: func(l *Link, v string) error {
			d, ok := parseMillis(v)
			if !ok {
				return errors.New("expected a non-negative number of milliseconds, like 40 or 12.5")
			}
			*ptr(l) = d
			return nil
		},
		copy:   func(d, s *Link) { *ptr(d) = *ptr(s) },
		format: func(l *Link) string { return formatFixed(int64(*ptr(l)), 6, 0) },
	}
}

func probKey(name string, f Field, ptr func(*Link) *float64) linkKey {
	return linkKey{
		name: name, field: f,
		parse: func(l *Link, v string) error {
			p, ok := parseProb(v)
			if !ok {
				return errors.New("expected a probability from 0 to 1, like 0.01")
			}
			*ptr(l) = p
			return nil
		},
		copy:   func(d, s *Link) { *ptr(d) = *ptr(s) },
		format: func(l *Link) string { return strconv.FormatFloat(*ptr(l), 'g', -1, 64) },
	}
}

func linkKeyNames() string {
	names := make([]string, len(linkKeys))
	for i, k := range linkKeys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// Parse reads a trace. A malformed line yields a *ParseError that names
// the line and says what was expected.
func Parse(r io.Reader) (*Trace, error) {
	return parse(r, "")
}

// ParseFile reads the trace in the named file; its errors name the file.
func ParseFile(name string) (*Trace, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f, filepath.Base(name))
}

// ParseString reads a trace from a string.
func ParseString(s string) (*Trace, error) {
	return Parse(strings.NewReader(s))
}

func parse(r io.Reader, file string) (*Trace, error) {
	p := parser{file: file, tr: &Trace{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineSize)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			p.line++
			return nil, p.errorf(0, "%s (the limit is %d bytes)", errLineLong, maxLineSize)
		}
		return nil, fmt.Errorf("trace: reading line %d: %w", p.line+1, err)
	}
	return p.tr, nil
}

type parser struct {
	file  string
	line  int
	tr    *Trace
	ended bool
}

func (p *parser) errorf(col int, format string, args ...any) *ParseError {
	return &ParseError{File: p.file, Line: p.line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

// token is a word of a line and its 1-based column.
type token struct {
	s   string
	col int
}

// tokenize splits a line into words at spaces and tabs, up to a comment.
func tokenize(line string) []token {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	var toks []token
	for i := 0; i < len(line); {
		if c := line[i]; c == ' ' || c == '\t' || c == '\r' {
			i++
			continue
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\r' {
			j++
		}
		toks = append(toks, token{line[i:j], i + 1})
		i = j
	}
	return toks
}

func (p *parser) parseLine(line string) error {
	toks := tokenize(line)
	if len(toks) == 0 {
		return nil
	}
	if p.ended {
		return p.errorf(toks[0].col, "event after end (end must be the last event)")
	}
	secs, ok := parseFixed(toks[0].s, 9, maxSeconds)
	if !ok {
		return p.errorf(toks[0].col, "expected a time in seconds from the start, like 12.5, got %q", toks[0].s)
	}
	e := Event{At: time.Duration(secs), Line: p.line}
	if n := len(p.tr.Events); n > 0 && e.At < p.tr.Events[n-1].At {
		return p.errorf(toks[0].col, "time %s goes backwards (the previous event is at %s)",
			toks[0].s, formatFixed(int64(p.tr.Events[n-1].At), 9, 3))
	}
	if len(toks) < 2 {
		return p.errorf(0, "expected an event after the time (link, handover, blackout, server_move or end)")
	}
	name, args := toks[1], toks[2:]
	var err error
	switch name.s {
	case "link":
		e.Kind = KindLink
		err = p.parseLink(&e, name, args)
	case "handover":
		e.Kind = KindHandover
		e.Duration, err = p.parseDuration(name, args, "outage_ms", false)
	case "blackout":
		e.Kind = KindBlackout
		e.Duration, err = p.parseDuration(name, args, "duration_ms", true)
	case "server_move", "end":
		e.Kind = KindServerMove
		if name.s == "end" {
			e.Kind = KindEnd
			p.ended = true
		}
		if len(args) > 0 {
			err = p.errorf(args[0].col, "%s takes no fields, got %q", name.s, args[0].s)
		}
	default:
		err = p.errorf(name.col, "unknown event %q (want link, handover, blackout, server_move or end)", name.s)
	}
	if err != nil {
		return err
	}
	p.tr.Events = append(p.tr.Events, e)
	return nil
}

// splitKV splits key=value, or reports what was expected.
func (p *parser) splitKV(t token) (key, val string, err error) {
	k, v, ok := strings.Cut(t.s, "=")
	if !ok || k == "" || v == "" {
		return "", "", p.errorf(t.col, "expected key=value, got %q", t.s)
	}
	return k, v, nil
}

func (p *parser) parseLink(e *Event, name token, args []token) error {
	if len(args) == 0 {
		return p.errorf(0, "link needs at least one of %s", linkKeyNames())
	}
next:
	for _, t := range args {
		k, v, err := p.splitKV(t)
		if err != nil {
			return err
		}
		for _, lk := range linkKeys {
			if lk.name != k {
				continue
			}
			if e.Set&lk.field != 0 {
				return p.errorf(t.col, "%s given twice", k)
			}
			if err := lk.parse(&e.Link, v); err != nil {
				return p.errorf(t.col+len(k)+1, "%s: %v, got %q", k, err, v)
			}
			e.Set |= lk.field
			continue next
		}
		return p.errorf(t.col, "unknown key %q for link (want %s)", k, linkKeyNames())
	}
	return nil
}

// parseDuration reads the single milliseconds field of handover and blackout.
func (p *parser) parseDuration(name token, args []token, key string, required bool) (time.Duration, error) {
	var d time.Duration
	seen := false
	for _, t := range args {
		k, v, err := p.splitKV(t)
		if err != nil {
			return 0, err
		}
		if k != key {
			return 0, p.errorf(t.col, "unknown key %q for %s (want %s)", k, name.s, key)
		}
		if seen {
			return 0, p.errorf(t.col, "%s given twice", k)
		}
		var ok bool
		if d, ok = parseMillis(v); !ok {
			return 0, p.errorf(t.col+len(k)+1,
				"%s: expected a non-negative number of milliseconds, like 120, got %q", k, v)
		}
		seen = true
	}
	if required && !seen {
		return 0, p.errorf(0, "%s needs %s", name.s, key)
	}
	return d, nil
}

// parseMillis reads a decimal number of milliseconds exactly, to the nanosecond.
func parseMillis(s string) (time.Duration, bool) {
	v, ok := parseFixed(s, 6, maxMillis)
	return time.Duration(v), ok
}

// parseFixed reads a non-negative decimal such as "12.345" as an integer
// count of 10^-scale units, exactly, rejecting signs, exponents, more than
// scale fractional digits and values above max (in whole units). Floats
// would turn 0.3 s into 299999999 ns.
func parseFixed(s string, scale int, max int64) (int64, bool) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && (frac == "" || !hasDot) || len(frac) > scale || len(whole) > 18 {
		return 0, false
	}
	if hasDot && frac == "" {
		return 0, false // "12." is more likely a typo than a number
	}
	var w, f int64
	for _, c := range []byte(whole) {
		if c < '0' || c > '9' {
			return 0, false
		}
		w = w*10 + int64(c-'0')
	}
	if w > max {
		return 0, false
	}
	for i := 0; i < scale; i++ {
		f *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			f += int64(c - '0')
		}
	}
	pow := int64(1)
	for i := 0; i < scale; i++ {
		pow *= 10
	}
	v := w*pow + f
	if v > max*pow {
		return 0, false
	}
	return v, true
}

// parseProb reads a probability; it accepts decimals and exponents
// (1e-3) but not the hexadecimal, infinite and NaN forms ParseFloat knows.
func parseProb(s string) (float64, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return 0, false
		}
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || !(p >= 0 && p <= 1) {
		return 0, false
	}
	return p, true
}
