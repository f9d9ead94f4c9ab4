package form

import (
	"errors"
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

func TestRenderAndParse(t *testing.T) {
	f := &Form{Type: "form", Title: "T", Instructions: "line 1\nline 2", Fields: []Field{
		{Var: "FORM_TYPE", Type: Hidden, Values: []string{"jabber:iq:register"}},
		{Var: "n", Type: ListSingle, Label: "Number", Required: true, Options: []Option{{Label: "A", Value: "+1"}}},
		{Var: "m", Type: TextMulti, Values: []string{"a", "b"}},
	}}
	parent := xmlel.New("jabber:iq:register", "query").Add(f.Element())
	got, err := Find(parent)
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != "T" || got.Instructions != "line 1\nline 2" || got.FormType() != "jabber:iq:register" {
		t.Fatalf("parsed %+v", got)
	}
	n, _ := got.Field("n")
	if !n.Required || len(n.Options) != 1 || n.Options[0].Value != "+1" {
		t.Fatalf("field n = %+v", n)
	}
	if v := got.Values(); v["m"] != "a\nb" {
		t.Fatalf("values = %v", v)
	}
}

func TestErrors(t *testing.T) {
	if _, err := Find(xmlel.New("q", "query")); !errors.Is(err, ErrNoForm) {
		t.Fatalf("no form: %v", err)
	}
	bad := xmlel.New(stanza.NSData, "x").SetAttr("type", "weird")
	if _, err := Parse(bad); err == nil {
		t.Fatal("a form of unknown type parsed")
	}
	for in, want := range map[string]bool{"1": true, "true": true, "0": false, "false": false, "": false} {
		if got, err := ParseBool(in); err != nil || got != want {
			t.Errorf("ParseBool(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseBool("yes"); err == nil {
		t.Error("ParseBool accepted yes")
	}
}
