// Package web holds footfall's embedded web assets: the demo page served
// at / (static/) and the browser client, served at /footfall-client.js.
//
// The client lives beside this file, not under static/, so that apps can
// take web/footfall-client.js straight from the repository; FS lays both
// out as one tree.
package web

import (
	"embed"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
)

//go:embed static footfall-client.js
var embedded embed.FS

// clientFile is the browser client, at the root of FS.
const clientFile = "footfall-client.js"

// FS returns the assets to serve at /: the files of static/ and
// footfall-client.js, all at the root.
func FS() fs.FS { return assets{} }

// assets overlays footfall-client.js on static/.
type assets struct{}

func (assets) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	switch name {
	case clientFile:
		return embedded.Open(clientFile)
	case ".":
		f, err := embedded.Open("static")
		if err != nil {
			return nil, err
		}
		return &rootDir{File: f}, nil
	}
	f, err := embedded.Open("static/" + name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			pe.Path = name // not "static/..."
		}
		return nil, err
	}
	return f, nil
}

// rootDir is static/ with the client among its entries.
type rootDir struct {
	fs.File
	entries []fs.DirEntry
	listed  bool
}

func (d *rootDir) Stat() (fs.FileInfo, error) {
	info, err := d.File.Stat()
	if err != nil {
		return nil, err
	}
	return rootInfo{info}, nil
}

func (d *rootDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.listed {
		d.listed = true
		es, err := fs.ReadDir(embedded, "static")
		if err != nil {
			return nil, err
		}
		info, err := fs.Stat(embedded, clientFile)
		if err != nil {
			return nil, err
		}
		es = append(es, fs.FileInfoToDirEntry(info))
		slices.SortFunc(es, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		d.entries = es
	}
	if n <= 0 {
		es := d.entries
		d.entries = nil
		return es, nil
	}
	if len(d.entries) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(d.entries))
	es := d.entries[:k:k]
	d.entries = d.entries[k:]
	return es, nil
}

// rootInfo names the root ".", as every fs.FS does.
type rootInfo struct{ fs.FileInfo }

func (rootInfo) Name() string { return "." }
