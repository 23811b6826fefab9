// Package dashboard tests slipway-server's web dashboard (server/ui) in a
// real browser: Debian's chromium, headless, driven by chromedp, against a
// real slipway-server process with simulated agents from test/fleetsim.
// The test writes a screenshot of every view to test/reports/ui/. It is
// skipped when chromium is not installed, unless SLIPWAY_E2E is set (then
// a missing chromium fails it). It must never reach anything beyond
// loopback.
package dashboard
