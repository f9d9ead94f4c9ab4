package xmlel

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits bound what one stanza (a child of a stream's root element) may
// hold. A stanza over a limit is skipped, and the stream goes on.
type Limits struct {
	Depth int // nesting below the stanza's own element (as MaxDepth)
	Attrs int // attributes of any one element, namespace declarations included
	Size  int // bytes of the stanza as it arrives; this also bounds its text
}

// MaxAttrs is the default limit of attributes on one element, and
// MaxStanzaSize the default limit of a stanza's size in bytes (twice
// Prosody's limit for server-to-server stanzas, four times its limit for
// clients').
const (
	MaxAttrs      = 100
	MaxStanzaSize = 1 << 20
)

// DefaultLimits are the limits of a component stream.
var DefaultLimits = Limits{Depth: MaxDepth, Attrs: MaxAttrs, Size: MaxStanzaSize}

// LimitError reports a stanza that went over a limit. It was read to its
// end without being kept, and the stream can still be read.
type LimitError struct {
	Limit string // "depth", "attributes" or "size"
	Max   int
	// Stanza holds the skipped stanza's name and its from, to, id and
	// type attributes (those that could be read), without children; nil
	// when its name could not be read.
	Stanza *Element
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("stanza over the %s limit (%d)", e.Limit, e.Max)
}

// ErrRestricted is returned for a document type declaration, which XMPP
// forbids (RFC 6120 §11.1).
var ErrRestricted = errors.New("xml: document type declarations are not allowed")

// Reader reads an XML stream whose root's children are stanzas (an XMPP
// stream). Each stanza is collected, within Limits, before it is parsed, so
// one that is too deep, has too many attributes or is too large costs no
// more memory than the limits allow, and is skipped on its own.
type Reader struct {
	f   *framer
	dec *xml.Decoder
}

// NewReader returns a Reader of the stream r.
func NewReader(r io.Reader, lim Limits) *Reader {
	f := &framer{src: r, in: make([]byte, 4096), lim: lim, keep: true}
	return &Reader{f: f, dec: xml.NewDecoder(f)}
}

// Open reads up to the root's start tag and returns it.
func (r *Reader) Open() (xml.StartElement, error) {
	for {
		tok, err := r.dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if st, ok := tok.(xml.StartElement); ok {
			return st, nil
		}
	}
}

// Next returns the next child element of the root. It returns io.EOF at the
// root's end, and a *LimitError for a stanza it skipped; after a
// *LimitError the stream can still be read. Other errors end the stream.
func (r *Reader) Next() (*Element, error) {
	for {
		tok, err := r.dec.Token()
		if err != nil {
			var le *LimitError
			if errors.As(err, &le) {
				if err := r.restart(); err != nil {
					return nil, err
				}
				return nil, le
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return Read(r.dec, t)
		case xml.EndElement:
			return nil, io.EOF
		}
	}
}

// restart replaces the decoder, which keeps a reader's error, by a new one
// that has read the root's start tag again (for its namespaces) and goes on
// after the skipped stanza.
func (r *Reader) restart() error {
	r.f.out = append(r.f.out[:0], r.f.root...)
	r.f.op = 0
	r.dec = xml.NewDecoder(r.f)
	for {
		tok, err := r.dec.Token()
		if err != nil {
			return fmt.Errorf("failed to resume the stream: %w", err)
		}
		if _, ok := tok.(xml.StartElement); ok {
			return nil
		}
	}
}

// The framer's lexical states.
const (
	sText     = iota // character data
	sLT              // after '<'
	sName            // in a start tag's name
	sTag             // in a start tag, between attributes
	sAttrName        // in an attribute's name
	sAttrEq          // after an attribute's name, before its quote
	sValue           // in an attribute's value
	sEmpty           // after '/' in a start tag
	sEndTag          // in an end tag
	sPI              // in <?…?>
	sBang            // after "<!"
	sComment         // in <!--…-->
	sCDATA           // in <![CDATA[…]]>
)

// Where the framer is in the stream.
const (
	inProlog = iota // up to the root's start tag, passed on
	inStream        // between stanzas: dropped
	inStanza        // a stanza, a stream-level comment or PI, or the root's end tag
	atEnd           // after the root's end tag
)

// captured attributes of a stanza's own element.
var capturedAttrs = [...]string{"from", "to", "id", "type"}

// maxCapture bounds what is kept of a skipped stanza's name and attributes
// (a JID is at most 3071 bytes; escaped, a little more).
const maxCapture = 4096

// framer lies under the XML decoder. It lexes the stream just enough to
// find each stanza's end, and hands a stanza to the decoder only once it
// has all of it within the limits; a stanza over a limit is dropped as it
// is read, and the decoder gets a *LimitError in its place.
type framer struct {
	src   io.Reader
	in    []byte
	ip, n int
	err   error // sticky

	out     []byte // bytes for the decoder
	op      int
	pending *LimitError // returned once out is drained

	lim    Limits
	where  int
	st     int
	depth  int  // open elements in the document
	keep   bool // the current bytes go to out
	run    int  // start of what lex has not emitted yet of its input chunk
	junk   bool // the current stream-level unit is a comment, PI or CDATA
	over   *LimitError
	attrs  int    // attributes of the current start tag
	marks  int    // progress through "?>", "-->", "]]>" or the text after "<!"
	quote  byte   // quote of the current attribute value
	bang   string // "--" or "[CDATA[" after "<!"
	root   []byte
	rootAt int

	// The stanza's own start tag, for the answer to a skipped stanza.
	top   bool
	name  []byte
	aname []byte
	capi  int // index in capturedAttrs of the value being read, or -1
	caps  [len(capturedAttrs)]struct {
		v     []byte
		quote byte
		long  bool // longer than maxCapture
		ok    bool // read to its end
	}
}

// Read is there for io.Reader; the decoder reads with ReadByte.
func (f *framer) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := f.ready(); err != nil {
		return 0, err
	}
	n := copy(p, f.out[f.op:])
	f.op += n
	return n, nil
}

func (f *framer) ReadByte() (byte, error) {
	if f.op < len(f.out) {
		b := f.out[f.op]
		f.op++
		return b, nil
	}
	if err := f.ready(); err != nil {
		return 0, err
	}
	b := f.out[f.op]
	f.op++
	return b, nil
}

// ready makes sure out has a byte to read, or returns why not.
func (f *framer) ready() error {
	for f.op >= len(f.out) {
		if f.pending != nil {
			err := f.pending
			f.pending = nil
			return err
		}
		if f.err != nil {
			return f.err
		}
		f.out, f.op = f.out[:0], 0
		if cap(f.out) > 64<<10 {
			f.out = nil // a large stanza's buffer is not kept for the small ones
		}
		f.fill()
	}
	return nil
}

// fill lexes input until a unit (the prolog, a stanza, the root's end) is
// complete, or an error.
func (f *framer) fill() {
	if f.where == atEnd {
		f.err = io.EOF
		return
	}
	for {
		if f.ip == f.n {
			n, err := f.src.Read(f.in)
			f.ip, f.n = 0, n
			if n == 0 {
				if err == nil {
					continue
				}
				if err == io.EOF && (f.where != inStream || len(f.out) > 0) {
					err = io.ErrUnexpectedEOF
				}
				f.err = err
				return
			}
		}
		done := f.lex()
		if done || f.err != nil {
			return
		}
	}
}

// emit passes b on when the current unit is kept, and checks its size.
func (f *framer) emit(b []byte) {
	if !f.keep {
		return
	}
	if len(f.out)+len(b) > cap(f.out) {
		// Doubling, and at once to the size limit (and a chunk)
		// when a doubling would reach it: append's slower growth of
		// large slices would allocate about five times the limit on
		// the way there.
		n := 2 * cap(f.out)
		if n >= f.lim.Size {
			n = f.lim.Size + len(f.in)
		}
		grown := make([]byte, len(f.out), max(n, len(f.out)+len(b), 4096))
		copy(grown, f.out)
		f.out = grown
	}
	f.out = append(f.out, b...)
	if len(f.out) > f.lim.Size {
		if f.where == inProlog {
			f.err = fmt.Errorf("xml: stream header larger than %d bytes", f.lim.Size)
			f.out = f.out[:0]
			return
		}
		f.exceed("size", f.lim.Size)
	}
}

// flush emits the bytes of p lexed since the last flush, up to to.
func (f *framer) flush(p []byte, to int) {
	if f.keep && to > f.run {
		f.emit(p[f.run:to])
	}
	f.run = to
}

// exceed drops the current stanza, which went over a limit.
func (f *framer) exceed(limit string, max int) {
	if f.where == inProlog {
		f.err = fmt.Errorf("xml: stream header over the %s limit (%d)", limit, max)
		f.out = f.out[:0]
		return
	}
	if f.over == nil {
		f.over = &LimitError{Limit: limit, Max: max}
		f.keep = false
		f.out = f.out[:0]
	}
}

// lex consumes f.in[f.ip:f.n]. It returns true when a unit is complete.
func (f *framer) lex() bool {
	p := f.in[f.ip:f.n]
	i := 0
	f.run = 0
	defer func() {
		f.flush(p, i)
		f.ip += i
	}()
	for i < len(p) {
		c := p[i]
		switch f.st {
		case sText:
			j := bytes.IndexByte(p[i:], '<')
			if j < 0 {
				j = len(p) - i
			}
			i += j
			if i == len(p) {
				return false
			}
			if f.where == inStream {
				f.where, f.keep, f.junk, f.run = inStanza, true, false, i
			}
			f.st = sLT
		case sLT:
			switch c {
			case '/':
				f.st = sEndTag
			case '?':
				f.st, f.marks = sPI, 0
				f.junkAtStreamLevel()
			case '!':
				f.st, f.marks = sBang, 0
				f.junkAtStreamLevel()
			case ' ', '\t', '\r', '\n', '>', '<', '=', '"', '\'':
				return f.malformed(c)
			default:
				if f.where == inProlog { // where the root's start tag will be in out
					f.rootAt = len(f.out) + i - f.run - 1
				}
				f.startTag()
				f.nameByte(c)
			}
		case sName:
			switch c {
			case '<', '=', '"', '\'':
				return f.malformed(c)
			case ' ', '\t', '\r', '\n':
				f.st = sTag
			case '/':
				f.st = sEmpty
			case '>':
				i++
				if f.where == inProlog {
					f.flush(p, i)
				}
				if f.openTag() {
					return true
				}
				continue
			default:
				f.nameByte(c)
			}
		case sTag:
			switch c {
			case '<', '=', '"', '\'':
				return f.malformed(c)
			case ' ', '\t', '\r', '\n':
			case '/':
				f.st = sEmpty
			case '>':
				i++
				if f.where == inProlog {
					f.flush(p, i)
				}
				if f.openTag() {
					return true
				}
				continue
			default:
				f.attrs++
				if f.attrs > f.lim.Attrs {
					f.exceed("attributes", f.lim.Attrs)
				}
				f.st = sAttrName
				if f.top {
					f.aname = append(f.aname[:0], c)
				}
			}
		case sAttrName, sAttrEq:
			switch c {
			case '"', '\'':
				f.st, f.quote = sValue, c
				f.startValue()
			case '=', ' ', '\t', '\r', '\n':
				f.st = sAttrEq
			case '<', '>', '/':
				return f.malformed(c)
			default:
				if f.st == sAttrEq {
					return f.malformed(c)
				}
				if f.top && len(f.aname) < 16 {
					f.aname = append(f.aname, c)
				}
			}
		case sValue:
			j := bytes.IndexByte(p[i:], f.quote)
			if j < 0 {
				j = len(p) - i
			}
			if bytes.IndexByte(p[i:i+j], '<') >= 0 {
				return f.malformed('<')
			}
			if i+j < len(p) {
				f.st = sTag
				j++
			}
			if f.capi >= 0 {
				cp := &f.caps[f.capi]
				v := p[i : i+j]
				if f.st == sTag {
					v = v[:len(v)-1]
				}
				if len(cp.v)+len(v) > maxCapture {
					cp.long = true
				} else {
					cp.v = append(cp.v, v...)
				}
				if f.st == sTag {
					cp.ok = !cp.long
					f.capi = -1
				}
			}
			i += j
			continue
		case sEmpty:
			if c != '>' {
				return f.malformed(c)
			}
			i++
			f.st = sText
			if f.top {
				f.top = false
			}
			if f.where == inProlog {
				// <stream/>: an empty stream.
				f.flush(p, i)
				f.where = atEnd
				return true
			}
			if f.depth == 1 {
				f.flush(p, i)
				return f.endUnit()
			}
			continue
		case sEndTag:
			if c == '<' {
				return f.malformed(c)
			}
			i++
			if c != '>' {
				continue
			}
			f.st = sText
			f.depth--
			if f.where == inProlog {
				continue // malformed: the decoder says so
			}
			if f.depth <= 1 {
				f.flush(p, i)
				if f.depth == 1 {
					return f.endUnit()
				}
				f.where = atEnd
				return true
			}
			continue
		case sPI:
			i++
			switch {
			case c == '?':
				f.marks = 1
			case c == '>' && f.marks == 1:
				if f.endSpecial() {
					return true
				}
			default:
				f.marks = 0
			}
			continue
		case sBang:
			// "<!" opens a comment ("<!--") or a CDATA section
			// ("<![CDATA["); anything else is a declaration.
			if f.marks == 0 {
				f.bang = "--"
				if c == '[' {
					f.bang = "[CDATA["
				}
			}
			if c != f.bang[f.marks] {
				f.err = ErrRestricted
				return false
			}
			f.marks++
			if f.marks == len(f.bang) {
				f.st, f.marks = sComment, 0
				if c == '[' {
					f.st = sCDATA
				}
			}
		case sComment, sCDATA:
			end := byte('-')
			if f.st == sCDATA {
				end = ']'
			}
			i++
			switch {
			case c == end:
				f.marks++
			case c == '>' && f.marks >= 2:
				if f.endSpecial() {
					return true
				}
			default:
				f.marks = 0
			}
			continue
		}
		i++
	}
	return false
}

// malformed ends the stream at a byte that cannot be where it is.
func (f *framer) malformed(c byte) bool {
	f.err = fmt.Errorf("xml: syntax error: unexpected %q", c)
	return false
}

// junkAtStreamLevel drops a comment or PI between stanzas.
func (f *framer) junkAtStreamLevel() {
	if f.where == inStanza && f.depth == 1 {
		f.junk, f.keep = true, false
		f.out = f.out[:0]
	}
}

// endSpecial ends a PI, comment or CDATA section; it returns true when that
// ends a stream-level unit.
func (f *framer) endSpecial() bool {
	f.st = sText
	if f.junk {
		f.junk = false
		f.where, f.keep = inStream, false
		return false
	}
	return false
}

// startTag begins a start tag.
func (f *framer) startTag() {
	f.st, f.attrs = sName, 0
	if f.where == inProlog {
		return
	}
	if f.depth-1 > f.lim.Depth {
		f.exceed("depth", f.lim.Depth)
	}
	f.top = f.depth == 1
	if f.top {
		f.name = f.name[:0]
		f.capi = -1
		for i := range f.caps {
			f.caps[i].v, f.caps[i].ok = f.caps[i].v[:0], false
		}
	}
}

func (f *framer) nameByte(c byte) {
	if f.top && len(f.name) < 64 {
		f.name = append(f.name, c)
	}
}

// startValue decides whether the value that starts is one to keep for an
// answer.
func (f *framer) startValue() {
	f.capi = -1
	if !f.top {
		return
	}
	for i, a := range capturedAttrs {
		if string(f.aname) == a {
			f.capi = i
			f.caps[i].v, f.caps[i].quote, f.caps[i].long, f.caps[i].ok = f.caps[i].v[:0], f.quote, false, false
		}
	}
}

// openTag ends a start tag ("…>"); it returns true when that ends a unit
// (the root's start tag).
func (f *framer) openTag() bool {
	f.st = sText
	f.depth++
	f.top = false
	if f.where == inProlog {
		f.root = append(f.root[:0], f.out[f.rootAt:]...)
		f.where = inStream
		f.keep = false
		return true
	}
	return false
}

// endUnit ends a stanza. A skipped one becomes the pending *LimitError.
func (f *framer) endUnit() bool {
	f.where, f.keep = inStream, false
	if f.over != nil {
		f.over.Stanza = f.captured()
		f.pending, f.over = f.over, nil
		f.out = f.out[:0]
	}
	return true
}

// captured returns the skipped stanza's name and addressing, or nil.
func (f *framer) captured() *Element {
	name := string(f.name)
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || len(f.name) >= 64 {
		return nil
	}
	e := &Element{Local: name}
	for i, a := range capturedAttrs {
		cp := &f.caps[i]
		if !cp.ok {
			continue
		}
		q := string(cp.quote)
		d := xml.NewDecoder(strings.NewReader("<x v=" + q + string(cp.v) + q + "/>"))
		tok, err := d.Token()
		if st, ok := tok.(xml.StartElement); err == nil && ok && len(st.Attr) == 1 {
			e.SetAttr(a, st.Attr[0].Value)
		}
	}
	return e
}
