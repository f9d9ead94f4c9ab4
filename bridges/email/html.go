package email

import (
	"strings"

	"golang.org/x/net/html"
)

// HTMLToText reduces an HTML body to readable text: block elements become
// line breaks, links keep their target, scripts and styles are dropped.
func HTMLToText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	skip := 0 // inside <script>, <style>, <head>
	var href string
	newline := func(n int) {
		t := strings.TrimRight(b.String(), " ")
		b.Reset()
		b.WriteString(t)
		have := len(t) - len(strings.TrimRight(t, "\n"))
		if len(t) == 0 {
			return
		}
		for ; have < n; have++ {
			b.WriteByte('\n')
		}
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return strings.TrimSpace(b.String())
		case html.TextToken:
			if skip > 0 {
				continue
			}
			raw := string(z.Text())
			text := strings.Join(strings.Fields(raw), " ")
			if text == "" {
				if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") && !strings.HasSuffix(b.String(), " ") {
					b.WriteByte(' ')
				}
				continue
			}
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") && !strings.HasSuffix(b.String(), " ") && strings.TrimLeft(raw, " \t\r\n") != raw {
				b.WriteByte(' ')
			}
			b.WriteString(text)
			if strings.TrimRight(raw, " \t\r\n") != raw {
				b.WriteByte(' ')
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			switch tag {
			case "script", "style", "head", "title":
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
				continue
			}
			if skip > 0 {
				continue
			}
			switch tag {
			case "br":
				newline(1)
			case "p", "div", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "hr":
				newline(2)
			case "tr", "li":
				newline(1)
				if tag == "li" && tt == html.StartTagToken {
					b.WriteString("• ")
				}
			case "td", "th":
				if tt == html.EndTagToken {
					b.WriteByte(' ')
				}
			case "a":
				if tt == html.StartTagToken {
					href = ""
					for hasAttr {
						var k, v []byte
						k, v, hasAttr = z.TagAttr()
						if string(k) == "href" {
							href = string(v)
						}
					}
				} else if tt == html.EndTagToken && href != "" {
					if (strings.HasPrefix(href, "http://") || strings.HasPrefix(href, "https://")) && !strings.Contains(b.String()[max(0, b.Len()-len(href)-1):], href) {
						b.WriteString(" <" + href + ">")
					}
					href = ""
				}
			}
		}
	}
}
