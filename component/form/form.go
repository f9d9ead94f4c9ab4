// Package form reads and writes XEP-0004 data forms.
package form

import (
	"errors"
	"fmt"
	"strings"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// Field types.
const (
	Boolean     = "boolean"
	Fixed       = "fixed"
	Hidden      = "hidden"
	JIDMulti    = "jid-multi"
	JIDSingle   = "jid-single"
	ListMulti   = "list-multi"
	ListSingle  = "list-single"
	TextMulti   = "text-multi"
	TextPrivate = "text-private"
	TextSingle  = "text-single"
)

// Option is a choice of a list field.
type Option struct {
	Label, Value string
}

// Field is one field of a form.
type Field struct {
	Var      string
	Type     string
	Label    string
	Desc     string
	Required bool
	Values   []string
	Options  []Option
}

// Value returns the field's first value, or "".
func (f Field) Value() string {
	if len(f.Values) == 0 {
		return ""
	}
	return f.Values[0]
}

// Form is a data form.
type Form struct {
	Type         string // form, submit, cancel, result
	Title        string
	Instructions string
	Fields       []Field
}

// Element renders the form.
func (f *Form) Element() *xmlel.Element {
	x := xmlel.New(stanza.NSData, "x").SetAttr("type", f.Type)
	if f.Title != "" {
		x.AddText("title", f.Title)
	}
	for _, line := range strings.Split(f.Instructions, "\n") {
		if line != "" {
			x.AddText("instructions", line)
		}
	}
	for _, fd := range f.Fields {
		fe := xmlel.New(stanza.NSData, "field").SetAttr("var", fd.Var).SetAttr("type", fd.Type).SetAttr("label", fd.Label)
		if fd.Desc != "" {
			fe.AddText("desc", fd.Desc)
		}
		if fd.Required && f.Type == "form" {
			fe.Add(xmlel.New(stanza.NSData, "required"))
		}
		for _, v := range fd.Values {
			fe.AddText("value", v)
		}
		if len(fd.Values) == 0 && fd.Type == Fixed && fd.Label == "" {
			fe.AddText("value", "")
		}
		for _, o := range fd.Options {
			oe := xmlel.New(stanza.NSData, "option").SetAttr("label", o.Label)
			oe.AddText("value", o.Value)
			fe.Add(oe)
		}
		x.Add(fe)
	}
	return x
}

// ErrNoForm is returned by Find when an element carries no data form.
var ErrNoForm = errors.New("no data form")

// Find returns the data form carried by parent (nil, ErrNoForm if none).
func Find(parent *xmlel.Element) (*Form, error) {
	x := parent.Child(stanza.NSData, "x")
	if x == nil {
		return nil, ErrNoForm
	}
	return Parse(x)
}

// Parse reads a data form element.
func Parse(x *xmlel.Element) (*Form, error) {
	if x.Space != stanza.NSData || x.Local != "x" {
		return nil, ErrNoForm
	}
	f := &Form{Type: x.Attr("type"), Title: x.ChildText(stanza.NSData, "title")}
	switch f.Type {
	case "form", "submit", "cancel", "result":
	default:
		return nil, fmt.Errorf("bad data form type %q", f.Type)
	}
	var instr []string
	for _, i := range x.ChildrenNamed(stanza.NSData, "instructions") {
		instr = append(instr, i.Text)
	}
	f.Instructions = strings.Join(instr, "\n")
	for _, fe := range x.ChildrenNamed(stanza.NSData, "field") {
		fd := Field{Var: fe.Attr("var"), Type: fe.Attr("type"), Label: fe.Attr("label"),
			Desc: fe.ChildText(stanza.NSData, "desc"), Required: fe.Child(stanza.NSData, "required") != nil}
		for _, v := range fe.ChildrenNamed(stanza.NSData, "value") {
			fd.Values = append(fd.Values, v.Text)
		}
		for _, o := range fe.ChildrenNamed(stanza.NSData, "option") {
			fd.Options = append(fd.Options, Option{Label: o.Attr("label"), Value: o.ChildText(stanza.NSData, "value")})
		}
		f.Fields = append(f.Fields, fd)
	}
	return f, nil
}

// Field returns the field named v, if any.
func (f *Form) Field(v string) (Field, bool) {
	for _, fd := range f.Fields {
		if fd.Var == v {
			return fd, true
		}
	}
	return Field{}, false
}

// Get returns the first value of field v, or "".
func (f *Form) Get(v string) string {
	fd, _ := f.Field(v)
	return fd.Value()
}

// Values returns every field's values joined by newlines (text-multi) —
// the shape registration and settings code works with.
func (f *Form) Values() map[string]string {
	m := make(map[string]string, len(f.Fields))
	for _, fd := range f.Fields {
		if fd.Var == "" || fd.Type == Fixed {
			continue
		}
		m[fd.Var] = strings.Join(fd.Values, "\n")
	}
	return m
}

// FormType returns the value of the FORM_TYPE hidden field.
func (f *Form) FormType() string { return f.Get("FORM_TYPE") }

// ParseBool reads an XEP-0004 boolean ("1", "true", "0", "false").
func ParseBool(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "1", "true":
		return true, nil
	case "0", "false", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}
