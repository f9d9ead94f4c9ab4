// Package xmlel is a small generic XML element tree used for XMPP stanzas.
//
// Stanzas are read from a stream as a whole element (with every namespace
// resolved) and written back with the minimal namespace declarations needed.
// Reader reads a stream's stanzas within Limits, skipping one over a limit
// without losing the stream.
// Handlers inspect them with Child/Attr/Text and build replies with New/Add.
package xmlel

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// Element is an XML element: its name (with resolved namespace), its
// attributes (namespace-less ones only, plus xml:lang), its child elements and
// its character data (all text children concatenated; XMPP never mixes the two
// in a way that matters to us).
type Element struct {
	Space    string
	Local    string
	Attrs    []xml.Attr
	Children []*Element
	Text     string
}

// New returns an element with namespace space and local name local.
func New(space, local string) *Element { return &Element{Space: space, Local: local} }

// Attr returns the value of the attribute named name (no namespace), or "".
func (e *Element) Attr(name string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attrs {
		if a.Name.Local == name && (a.Name.Space == "" || name == "lang") {
			return a.Value
		}
	}
	return ""
}

// SetAttr sets (or removes, when value is "") the attribute name. It returns e.
func (e *Element) SetAttr(name, value string) *Element {
	for i, a := range e.Attrs {
		if a.Name.Local == name && a.Name.Space == "" {
			if value == "" {
				e.Attrs = append(e.Attrs[:i], e.Attrs[i+1:]...)
			} else {
				e.Attrs[i].Value = value
			}
			return e
		}
	}
	if value != "" {
		e.Attrs = append(e.Attrs, xml.Attr{Name: xml.Name{Local: name}, Value: value})
	}
	return e
}

// Child returns the first child with the given namespace and local name
// (an empty space matches any namespace), or nil.
func (e *Element) Child(space, local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Local == local && (space == "" || c.Space == space) {
			return c
		}
	}
	return nil
}

// ChildrenNamed returns every child with that namespace and local name.
func (e *Element) ChildrenNamed(space, local string) []*Element {
	if e == nil {
		return nil
	}
	var out []*Element
	for _, c := range e.Children {
		if c.Local == local && (space == "" || c.Space == space) {
			out = append(out, c)
		}
	}
	return out
}

// ChildText returns the text of the first matching child, or "".
func (e *Element) ChildText(space, local string) string {
	if c := e.Child(space, local); c != nil {
		return c.Text
	}
	return ""
}

// Add appends children and returns e.
func (e *Element) Add(children ...*Element) *Element {
	for _, c := range children {
		if c != nil {
			e.Children = append(e.Children, c)
		}
	}
	return e
}

// AddText appends a child element in the same namespace as e (or space if
// given non-empty) with the given text, and returns e.
func (e *Element) AddText(local, text string) *Element {
	c := New(e.Space, local)
	c.Text = text
	return e.Add(c)
}

// WithText sets the text of e and returns e.
func (e *Element) WithText(text string) *Element {
	e.Text = text
	return e
}

// Remove deletes every child with that namespace and local name.
func (e *Element) Remove(space, local string) {
	kept := e.Children[:0]
	for _, c := range e.Children {
		if !(c.Local == local && (space == "" || c.Space == space)) {
			kept = append(kept, c)
		}
	}
	e.Children = kept
}

// Copy returns a deep copy of e.
func (e *Element) Copy() *Element {
	if e == nil {
		return nil
	}
	c := &Element{Space: e.Space, Local: e.Local, Text: e.Text}
	c.Attrs = append([]xml.Attr(nil), e.Attrs...)
	for _, ch := range e.Children {
		c.Children = append(c.Children, ch.Copy())
	}
	return c
}

// ErrTooDeep is returned for documents nested deeper than MaxDepth.
var ErrTooDeep = errors.New("xml: element nested too deeply")

// MaxDepth bounds nesting so a hostile peer cannot exhaust the stack.
const MaxDepth = 64

// Read reads the element that starts with start from d.
func Read(d *xml.Decoder, start xml.StartElement) (*Element, error) {
	return read(d, start, 0)
}

func read(d *xml.Decoder, start xml.StartElement, depth int) (*Element, error) {
	if depth > MaxDepth {
		return nil, ErrTooDeep
	}
	e := &Element{Space: start.Name.Space, Local: start.Name.Local}
	for _, a := range start.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		if a.Name.Space == "http://www.w3.org/XML/1998/namespace" || a.Name.Space == "xml" {
			a.Name.Space = "xml"
		} else if a.Name.Space != "" {
			continue
		}
		e.Attrs = append(e.Attrs, xml.Attr{Name: a.Name, Value: a.Value})
	}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			c, err := read(d, t, depth+1)
			if err != nil {
				return nil, err
			}
			e.Children = append(e.Children, c)
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			e.Text = text.String()
			return e, nil
		}
	}
}

// Parse parses one element from s.
func Parse(s string) (*Element, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			return Read(d, start)
		}
	}
}

// String serialises e; parentSpace "jabber:client" or "jabber:component:accept"
// is assumed for stanza names, so the top element declares its namespace only
// when it differs from defaultSpace.
func (e *Element) String() string {
	b := bytes.NewBuffer(make([]byte, 0, e.size()))
	e.write(b, "")
	return b.String()
}

// Bytes serialises e like String, without the copy to a string.
func (e *Element) Bytes() []byte {
	b := bytes.NewBuffer(make([]byte, 0, e.size()))
	e.write(b, "")
	return b.Bytes()
}

// size is the length of e serialised when nothing needs escaping (and a
// namespace declaration on every element): the buffer is allocated once
// instead of growing through doublings.
func (e *Element) size() int {
	n := 2*len(e.Local) + len(e.Space) + len(e.Text) + 14 // <l xmlns="s">text</l>
	for _, a := range e.Attrs {
		n += len(a.Name.Local) + len(a.Value) + 8 // ␠xml:n="v"
	}
	for _, c := range e.Children {
		n += c.size()
	}
	return n
}

// Marshal writes e into b as if inside an element whose default namespace is
// parentSpace (so a stanza in the stream's default namespace gets no xmlns).
func (e *Element) Marshal(b *bytes.Buffer, parentSpace string) { e.write(b, parentSpace) }

func (e *Element) write(b *bytes.Buffer, parentSpace string) {
	b.WriteByte('<')
	b.WriteString(e.Local)
	if e.Space != parentSpace {
		b.WriteString(` xmlns="`)
		escape(b, e.Space)
		b.WriteByte('"')
	}
	for _, a := range e.Attrs {
		b.WriteByte(' ')
		if a.Name.Space == "xml" {
			b.WriteString("xml:")
		}
		b.WriteString(a.Name.Local)
		b.WriteString(`="`)
		escape(b, a.Value)
		b.WriteByte('"')
	}
	if len(e.Children) == 0 && e.Text == "" {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	escape(b, e.Text)
	for _, c := range e.Children {
		c.write(b, e.Space)
	}
	b.WriteString("</")
	b.WriteString(e.Local)
	b.WriteByte('>')
}

// escape writes s with XML escaping, dropping characters XML cannot carry.
func escape(b *bytes.Buffer, s string) {
	// Most text is plain ASCII: copy it in one piece.
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || c < 0x20 || c == '<' || c == '>' || c == '&' || c == '"' || c == '\'' {
			break
		}
	}
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			if ValidXMLChar(r) {
				b.WriteRune(r)
			}
		}
	}
}

// ValidXMLChar reports whether r may appear in an XML 1.0 document.
func ValidXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD && r != 0xFFFE) ||
		(r >= 0x10000 && r <= 0x10FFFF)
}

// CleanText removes characters XML cannot carry (control characters,
// invalid UTF-8) from s.
func CleanText(s string) string {
	ok := true
	for _, r := range s {
		if !ValidXMLChar(r) || r == 0xFFFD {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "") {
		if ValidXMLChar(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}
