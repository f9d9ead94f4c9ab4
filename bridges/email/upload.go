package email

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// uploadService is the XEP-0363 service found on the XMPP server.
type uploadService struct {
	mu      sync.Mutex
	jid     string
	maxSize int64 // 0: no limit announced
}

func (u *uploadService) get() (string, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.jid, u.maxSize
}

// Connected implements bridges.Connected: look for an upload service on
// the XMPP server each time the stream comes up.
func (b *Bridge) Connected(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	jid, max, err := b.discoverUpload(ctx)
	if err != nil {
		b.host.Log().Debug("no HTTP upload service", "err", err)
	}
	b.upload.mu.Lock()
	b.upload.jid, b.upload.maxSize = jid, max
	b.upload.mu.Unlock()
	if jid != "" {
		b.host.Log().Info("attachments are uploaded", "service", jid, "max_size", max)
	}
}

func (b *Bridge) discoverUpload(ctx context.Context) (string, int64, error) {
	server := b.host.Domain()
	if i := strings.IndexByte(server, '.'); i >= 0 {
		server = server[i+1:]
	}
	items, err := b.host.IQ(ctx, stanza.IQ("", server, "get", "", xmlel.New(stanza.NSDiscoItems, "query")))
	if err != nil {
		return "", 0, err
	}
	for _, it := range items.Child(stanza.NSDiscoItems, "query").ChildrenNamed("", "item") {
		jid := it.Attr("jid")
		info, err := b.host.IQ(ctx, stanza.IQ("", jid, "get", "", xmlel.New(stanza.NSDiscoInfo, "query")))
		if err != nil || info.Attr("type") != "result" {
			continue
		}
		q := info.Child(stanza.NSDiscoInfo, "query")
		found := false
		for _, f := range q.ChildrenNamed("", "feature") {
			found = found || f.Attr("var") == stanza.NSUpload
		}
		if !found {
			continue
		}
		var max int64
		for _, x := range q.ChildrenNamed(stanza.NSData, "x") {
			for _, f := range x.ChildrenNamed(stanza.NSData, "field") {
				if f.Attr("var") == "max-file-size" {
					max, _ = strconv.ParseInt(f.ChildText(stanza.NSData, "value"), 10, 64)
				}
			}
		}
		return jid, max, nil
	}
	return "", 0, fmt.Errorf("no item of %s offers %s", server, stanza.NSUpload)
}

// uploadAttachment puts one attachment on the upload service and returns
// its download URL.
func (b *Bridge) uploadAttachment(ctx context.Context, a Attachment) (string, error) {
	jid, max := b.upload.get()
	if jid == "" {
		return "", fmt.Errorf("no upload service")
	}
	if max > 0 && a.Size > max {
		return "", fmt.Errorf("%d bytes is over the upload limit of %d", a.Size, max)
	}
	ct := a.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	req := xmlel.New(stanza.NSUpload, "request").SetAttr("filename", a.Name).
		SetAttr("size", strconv.FormatInt(a.Size, 10)).SetAttr("content-type", ct)
	r, err := b.host.IQ(ctx, stanza.IQ("", jid, "get", "", req))
	if err != nil {
		return "", fmt.Errorf("failed to request an upload slot: %w", err)
	}
	if r.Attr("type") != "result" {
		return "", fmt.Errorf("upload slot refused: %v", stanza.ErrorOf(r))
	}
	slot := r.Child(stanza.NSUpload, "slot")
	put, get := slot.Child(stanza.NSUpload, "put"), slot.Child(stanza.NSUpload, "get")
	if put == nil || get == nil || put.Attr("url") == "" || get.Attr("url") == "" {
		return "", fmt.Errorf("upload slot without URLs")
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPut, put.Attr("url"), bytes.NewReader(a.Data))
	if err != nil {
		return "", err
	}
	hr.Header.Set("Content-Type", ct)
	hr.ContentLength = int64(len(a.Data))
	for _, h := range put.ChildrenNamed(stanza.NSUpload, "header") {
		switch n := h.Attr("name"); strings.ToLower(n) {
		case "authorization", "cookie", "expires":
			hr.Header.Set(n, strings.NewReplacer("\r", "", "\n", "").Replace(h.Text))
		}
	}
	resp, err := b.httpc.Do(hr)
	if err != nil {
		return "", fmt.Errorf("upload failed: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("upload failed: HTTP %s", resp.Status)
	}
	return get.Attr("url"), nil
}
