// Package repocheck holds tests over the repository's own files, not over any Go package: that the
// repository stands on its own (no file refers to a path outside it, such as the developers'
// shared folder) and that every citation of a document section (`docs/<file>.md#<section>`, or a
// Markdown link to `#<section>`) names a heading that exists, computed as GitHub computes heading
// anchors. See CONTRIBUTING.md.
package repocheck
