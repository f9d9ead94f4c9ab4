package xmlel

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

const (
	testHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='s1'>`
	testFooter = `</stream:stream>`
)

// readAll reads s with a Reader: an element's String, or "skip:<limit>" for
// a stanza skipped over a limit.
func readAll(t testing.TB, s string, lim Limits) ([]string, []*LimitError, error) {
	t.Helper()
	r := NewReader(strings.NewReader(s), lim)
	if _, err := r.Open(); err != nil {
		return nil, nil, err
	}
	var out []string
	var skipped []*LimitError
	for {
		el, err := r.Next()
		var le *LimitError
		switch {
		case errors.As(err, &le):
			out = append(out, "skip:"+le.Limit)
			skipped = append(skipped, le)
		case err == io.EOF:
			return out, skipped, nil
		case err != nil:
			return out, skipped, err
		default:
			out = append(out, el.String())
		}
	}
}

func TestReaderReadsStanzas(t *testing.T) {
	in := testHeader + "\n <!-- a comment -->  <?pi x?> " +
		`<message to='a@b' type="chat" x='1 > 0 / 2'><body>a &gt; b &amp; <![CDATA[<c> ]] ]]]></body><!-- <x/> --></message>` +
		` <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>` + "\t<presence/>\n" + testFooter
	got, skipped, err := readAll(t, in, DefaultLimits)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("err %v, skipped %v", err, skipped)
	}
	want := []string{
		`<message xmlns="jabber:component:accept" to="a@b" type="chat" x="1 &gt; 0 / 2"><body>a &gt; b &amp; &lt;c&gt; ]] ]</body></message>`,
		`<iq xmlns="jabber:component:accept" type="get" id="1"><ping xmlns="urn:xmpp:ping"/></iq>`,
		`<presence xmlns="jabber:component:accept"/>`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func nested(n int) string {
	return strings.Repeat("<a>", n) + strings.Repeat("</a>", n)
}

func attrs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " a%d='%d'", i, i)
	}
	return b.String()
}

// A stanza over each limit is skipped with its addressing kept for an
// answer, and the stanzas after it are read in the stream's namespace.
func TestReaderSkipsStanzasOverLimits(t *testing.T) {
	lim := Limits{Depth: 8, Attrs: 10, Size: 1000}
	next := `<message from='alice@localhost/r' to='x@gw' id='ok'><body>hi</body></message>`
	for _, tc := range []struct {
		name, limit, stanza string
	}{
		{"depth", "depth", `<message from='e&amp;ve@localhost/r' to="#c%irc@gw" id='m&lt;1' type='chat'>` + nested(9) + `</message>`},
		{"depth at the stanza", "depth", `<iq from='eve@localhost/r' to='irc@gw' id='i1' type='set'><q>` + nested(8) + `</q></iq>`},
		{"attributes of a child", "attributes", `<message from='eve@localhost/r' to='x@gw' id='m2'><x` + attrs(11) + `/></message>`},
		{"attributes of the stanza", "attributes", `<message` + attrs(20) + ` from='eve@localhost/r' to='x@gw' id='m3'><body/></message>`},
		{"size of the text", "size", `<message from='eve@localhost/r' to='x@gw' id='m4'><body>` + strings.Repeat("é", 600) + `</body></message>`},
		{"size of an attribute", "size", `<message from='eve@localhost/r' to='x@gw' id='m5' x='` + strings.Repeat("v", 2000) + `'/>`},
		{"empty stanza", "attributes", `<presence` + attrs(11) + ` from='eve@localhost/r' to='x@gw'/>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped, err := readAll(t, testHeader+tc.stanza+" "+next+testFooter, lim)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0] != "skip:"+tc.limit || !strings.HasPrefix(got[1], `<message xmlns="jabber:component:accept" from="alice@localhost/r"`) {
				t.Fatalf("got %q", got)
			}
			ref, err := Parse(tc.stanza)
			if err != nil && !errors.Is(err, ErrTooDeep) {
				t.Fatal(err)
			}
			st := skipped[0].Stanza
			if st == nil {
				t.Fatal("no stanza kept for the answer")
			}
			want := New("", strings.SplitN(tc.stanza[1:], " ", 2)[0])
			if ref != nil {
				for _, a := range capturedAttrs {
					want.SetAttr(a, ref.Attr(a))
				}
			} else { // too deep for Parse: the attributes as written
				want.SetAttr("from", "e&ve@localhost/r").SetAttr("to", "#c%irc@gw").SetAttr("id", "m<1").SetAttr("type", "chat")
				if tc.name != "depth" {
					want = New("", "iq").SetAttr("from", "eve@localhost/r").SetAttr("to", "irc@gw").SetAttr("id", "i1").SetAttr("type", "set")
				}
			}
			sortAttrs := func(e *Element) string {
				var s []string
				for _, a := range capturedAttrs {
					s = append(s, a+"="+e.Attr(a))
				}
				return e.Local + " " + strings.Join(s, " ")
			}
			if sortAttrs(st) != sortAttrs(want) {
				t.Fatalf("kept %q, want %q", sortAttrs(st), sortAttrs(want))
			}
		})
	}
}

func TestReaderLimitsAreInclusive(t *testing.T) {
	lim := Limits{Depth: 8, Attrs: 10, Size: 200}
	stanzas := []string{
		`<m>` + nested(8) + `</m>`,
		`<m` + attrs(10) + `/>`,
		`<m>` + strings.Repeat("x", 200-len("<m></m>")) + `</m>`,
	}
	got, skipped, err := readAll(t, testHeader+strings.Join(stanzas, "")+testFooter, lim)
	if err != nil || len(skipped) != 0 || len(got) != len(stanzas) {
		t.Fatalf("got %q, err %v", got, err)
	}
}

// segments streams each segment's text repeated, without holding it all.
type segments []struct {
	s string
	n int
}

func (g *segments) Read(p []byte) (int, error) {
	k := 0
	for k < len(p) && len(*g) > 0 {
		seg := &(*g)[0]
		if seg.n == 0 {
			*g = (*g)[1:]
			continue
		}
		c := copy(p[k:], seg.s)
		k += c
		if c < len(seg.s) { // the rest of this repetition next time
			rest := seg.s[c:]
			seg.n--
			*g = append(segments{{rest, 1}}, (*g)...)
			return k, nil
		}
		seg.n--
	}
	if k == 0 {
		return 0, io.EOF
	}
	return k, nil
}

// Skipping a stanza costs about the size limit, however large it is.
func TestReaderSkipsInBoundedMemory(t *testing.T) {
	const huge = 24 << 20
	next := `<message id='next'/>` + testFooter
	for _, tc := range []struct {
		limit string
		in    segments
	}{
		{"size", segments{{testHeader + `<message from='eve@localhost/r' id='big'><body>`, 1}, {strings.Repeat("spam ", 1000), huge / 5000}, {`</body></message>` + next, 1}}},
		{"attributes", segments{{testHeader + `<message from='eve@localhost/r' id='big'`, 1}, {strings.Repeat(" a='1'", 1000), huge / 6000}, {`/>` + next, 1}}},
		{"depth", segments{{testHeader + `<message from='eve@localhost/r' id='big'>`, 1}, {strings.Repeat("<a>", 1000), huge / 7000}, {strings.Repeat("</a>", 1000), huge / 7000}, {`</message>` + next, 1}}},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r := NewReader(&tc.in, DefaultLimits)
			if _, err := r.Open(); err != nil {
				t.Fatal(err)
			}
			_, err := r.Next()
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tc.limit || le.Stanza == nil || le.Stanza.Attr("id") != "big" {
				t.Fatalf("first stanza: %v", err)
			}
			el, err := r.Next()
			if err != nil || el.Attr("id") != "next" {
				t.Fatalf("next stanza: %v %v", el, err)
			}
			runtime.ReadMemStats(&after)
			// The stanza is kept until it goes over a limit: the
			// buffer grows to the size limit at most, by doublings.
			alloc := after.TotalAlloc - before.TotalAlloc
			if alloc > uint64(4*DefaultLimits.Size) {
				t.Fatalf("skipping %d bytes allocated %d bytes", huge, alloc)
			}
			t.Logf("skipping %d bytes allocated %d bytes", huge, alloc)
		})
	}
}

func TestReaderStreamErrors(t *testing.T) {
	for name, in := range map[string]string{
		"mismatched tags": testHeader + `<message><a></b></message>` + testFooter,
		"bad entity":      testHeader + `<message>&bogus;</message>` + testFooter,
		"doctype":         testHeader + `<!DOCTYPE x><message/>` + testFooter,
		"doctype inside":  testHeader + `<message><!DOCTYPE x></message>` + testFooter,
		"cut short":       testHeader + `<message><body>abc`,
		"cut in a skip":   testHeader + `<message>` + nested(100),
	} {
		got, _, err := readAll(t, in, DefaultLimits)
		if err == nil || err == io.EOF {
			t.Errorf("%s: read %q without an error", name, got)
		}
		var le *LimitError
		if errors.As(err, &le) {
			t.Errorf("%s: a limit error instead of a stream error: %v", name, err)
		}
	}
	if _, _, err := readAll(t, `<?xml version='1.0'?><stream:stream`+attrs(200)+`>`, DefaultLimits); err == nil || !strings.Contains(err.Error(), "stream header") {
		t.Errorf("a stream header with 200 attributes: %v", err)
	}
}

// A skipped stanza's name or address too long to keep is left out of what
// the answer is built from.
func TestReaderCaptureBounds(t *testing.T) {
	lim := Limits{Depth: 1, Attrs: 10, Size: 1 << 20}
	long := strings.Repeat("x", maxCapture+1)
	_, skipped, err := readAll(t, testHeader+`<message from='`+long+`' id='7'>`+nested(3)+`</message><`+long+` id='8'>`+nested(3)+`</`+long+`>`+testFooter, lim)
	if err != nil || len(skipped) != 2 {
		t.Fatalf("%v %v", skipped, err)
	}
	if st := skipped[0].Stanza; st == nil || st.Attr("from") != "" || st.Attr("id") != "7" {
		t.Fatalf("first: %+v", st)
	}
	if skipped[1].Stanza != nil {
		t.Fatalf("second: %+v", skipped[1].Stanza)
	}
}

// refRead reads like Read, without a depth limit, and reports the deepest
// level and the most attributes of one element.
func refRead(d *xml.Decoder, start xml.StartElement, depth int, maxDepth, maxAttrs *int) (*Element, error) {
	*maxDepth = max(*maxDepth, depth)
	*maxAttrs = max(*maxAttrs, len(start.Attr))
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
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			c, err := refRead(d, t, depth+1, maxDepth, maxAttrs)
			if err != nil {
				return nil, err
			}
			e.Children = append(e.Children, c)
		case xml.CharData:
			text.Write(t)
		case xml.Directive:
			return nil, errors.New("directive")
		case xml.EndElement:
			e.Text = text.String()
			return e, nil
		}
	}
}

// reference reads s with encoding/xml alone, what the Reader should give
// for a well-formed stream.
func reference(s string, lim Limits) ([]string, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	var out []string
	root := false
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return out, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if !root {
				root = true
				continue
			}
			var depth, attrs int
			el, err := refRead(d, t, 0, &depth, &attrs)
			if err != nil {
				return out, err
			}
			switch {
			case depth > lim.Depth || attrs > lim.Attrs || int(d.InputOffset()-off) > lim.Size:
				out = append(out, "skip")
			default:
				out = append(out, el.String())
			}
		case xml.EndElement:
			return out, nil
		case xml.Directive:
			return out, errors.New("directive")
		}
	}
}

// FuzzReader reads a stream of arbitrary content under small limits: the
// Reader never fails on its own, returns what encoding/xml returns for a
// well-formed stream, and skips exactly the stanzas over a limit.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		`<message to='a@b'><body>hi</body></message>`,
		`<message>` + nested(6) + `</message><iq/>`,
		`<message` + attrs(6) + `/><presence/>`,
		`<message><x` + attrs(5) + `/></message>`,
		`<message><body>` + strings.Repeat("long ", 60) + `</body></message><m/>`,
		`<!-- c --><?p ?><m a='>/' b="'"><![CDATA[<]]]]>]]></m>`,
		`<message><a></b></message>`,
		`<m/></stream:stream><after/>`,
	} {
		f.Add(s)
	}
	lim := Limits{Depth: 4, Attrs: 4, Size: 256}
	f.Fuzz(func(t *testing.T, body string) {
		s := testHeader + body + testFooter
		got, skipped, err := readAll(t, s, lim)
		for _, le := range skipped {
			if le.Stanza != nil && len(le.Stanza.Attrs) > len(capturedAttrs) {
				t.Fatalf("kept %d attributes", len(le.Stanza.Attrs))
			}
		}
		want, rerr := reference(s, lim)
		if rerr != nil {
			return // not well-formed: the Reader may fail anywhere
		}
		if err != nil {
			t.Fatalf("the Reader failed (%v) on a well-formed stream; read %q", err, got)
		}
		for i := range got {
			if strings.HasPrefix(got[i], "skip:") {
				got[i] = "skip"
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("read\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
