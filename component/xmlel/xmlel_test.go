package xmlel

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := `<message xmlns="jabber:client" to="a@b" type="chat"><body>x &lt; y &amp; "z"</body><x xmlns="jabber:x:data" type="form"><field var="v"/></x></message>`
	e, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if e.Space != "jabber:client" || e.Attr("to") != "a@b" || e.ChildText("", "body") != `x < y & "z"` {
		t.Fatalf("parsed %+v", e)
	}
	if e.Child("jabber:x:data", "x").Child("jabber:x:data", "field").Attr("var") != "v" {
		t.Fatal("nested namespaced child not found")
	}
	again, err := Parse(e.String())
	if err != nil {
		t.Fatal(err)
	}
	if again.String() != e.String() {
		t.Fatalf("round trip changed the element:\n%s\n%s", e, again)
	}
}

func TestMarshalOmitsParentNamespace(t *testing.T) {
	e := New("jabber:component:accept", "presence").SetAttr("to", "x@y")
	e.Add(New("http://jabber.org/protocol/muc#user", "x"))
	s := e.String()
	if !strings.Contains(s, `xmlns="jabber:component:accept"`) {
		t.Fatalf("top-level namespace missing: %s", s)
	}
	if strings.Count(s, "xmlns=") != 2 {
		t.Fatalf("unexpected namespace declarations: %s", s)
	}
}

func TestInvalidCharactersDropped(t *testing.T) {
	e := New("ns", "body").WithText("a\x00b\x1bc\uFFFEd")
	if s := e.String(); s != `<body xmlns="ns">abcd</body>` {
		t.Fatalf("got %q", s)
	}
	if got := CleanText("ok\x07\xff!"); got != "ok!" {
		t.Fatalf("CleanText = %q", got)
	}
	if got := CleanText("déjà vu"); got != "déjà vu" {
		t.Fatalf("CleanText changed valid text: %q", got)
	}
}

func TestDepthLimit(t *testing.T) {
	deep := strings.Repeat("<a>", MaxDepth+2) + strings.Repeat("</a>", MaxDepth+2)
	if _, err := Parse(deep); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("Parse of a too deep document: %v", err)
	}
	if _, err := Parse("<a><b></a>"); err == nil {
		t.Fatal("malformed XML parsed")
	}
}

func TestSetAttrAndRemove(t *testing.T) {
	e := New("", "x").SetAttr("a", "1").SetAttr("a", "2").SetAttr("b", "3").SetAttr("b", "")
	if e.Attr("a") != "2" || e.Attr("b") != "" || len(e.Attrs) != 1 {
		t.Fatalf("attrs = %+v", e.Attrs)
	}
	e.Add(New("n", "c"), New("m", "c"), nil)
	e.Remove("n", "c")
	if len(e.Children) != 1 || e.Children[0].Space != "m" {
		t.Fatalf("children = %+v", e.Children)
	}
	c := e.Copy()
	c.Children[0].Local = "changed"
	if e.Children[0].Local != "c" {
		t.Fatal("Copy is shallow")
	}
}
