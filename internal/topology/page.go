package topology

import (
	"embed"
	"io/fs"
)

//go:embed page
var page embed.FS

// Page is the topology page's files, served by the daemon's API under
// /tether/v1/ui: index.html (the page), app.js (draws the SVG, redraws on
// events) and app.css. No library, no CDN.
func Page() fs.FS {
	sub, err := fs.Sub(page, "page")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	return sub
}
