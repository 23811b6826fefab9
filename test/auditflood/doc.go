// Package auditflood measures what a flood of refused requests costs the
// real slipway-server: it builds the binary (or takes
// SLIPWAY_AUDITFLOOD_SERVER), starts it on loopback with its default
// [audit] settings and [limits] that let every request through to the
// audit log (max_header_bytes 1 MiB, no unauthenticated rate limit; by
// default such a flood gets 431 and 429 answers without reaching it),
// sends N unauthenticated requests with 900 KB paths
// over HTTP, and reports the growth of store.db (after a clean stop, so
// the last refusal counts are written) and the server's resident memory
// (idle, peak sampled from /proc during the flood, VmHWM).
//
// TestAuditFlood runs only with SLIPWAY_AUDITFLOOD=1 (make bench-audit);
// it fails when store.db grows by 1 MB or more, or the peak RSS is 100 MB
// or more above idle (issue 14's bound). SLIPWAY_AUDITFLOOD_N sets N
// (default 10,000). Figures go to the test log; test/reports/audit-bench.md
// records them.
package auditflood
