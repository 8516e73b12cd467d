package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// A scrape whose turn would come later than its wait is answered 429 at
// once, saying when to ask again; so is one from a peer past the most
// whose scrapes are counted, while each of them is still within its burst.
// Turns come once an hour here, so that no peer's count fills again while
// the test runs.
func TestScrapesPastTheirTurnsAreRefused(t *testing.T) {
	h := scrapesLimited(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), rate.Every(time.Hour), MetricsScrapeBurst, time.Second)
	scrape := func(peer string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		r.RemoteAddr = peer
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	refused := func(w *httptest.ResponseRecorder) bool {
		return w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "1"
	}
	for i := range MetricsScrapeBurst + 3 {
		if got, want := refused(scrape("192.0.2.1:4000")), i >= MetricsScrapeBurst; got != want {
			t.Errorf("scrape %d from one peer: refused %v, want %v (the burst is %d)", i+1, got, want, MetricsScrapeBurst)
		}
	}
	// Another port of the same address, and another address of the same
	// IPv6 /64, are the same peer.
	if !refused(scrape("192.0.2.1:4001")) {
		t.Error("a scrape from another port of the same address was not refused")
	}
	scrape("[2001:db8::1]:4000")
	for range MetricsScrapeBurst - 1 {
		scrape("[2001:db8::2]:4000")
	}
	if !refused(scrape("[2001:db8::3]:4000")) {
		t.Error("a scrape from the same IPv6 /64 past its burst was not refused")
	}
	// With those two, maxScrapePeers peers are counted; the next is refused.
	for i := range maxScrapePeers - 2 {
		if w := scrape(fmt.Sprintf("198.51.100.%d:4000", i+1)); w.Code != http.StatusOK {
			t.Fatalf("peer %d: %d", i+1, w.Code)
		}
	}
	if !refused(scrape("203.0.113.1:4000")) {
		t.Errorf("a scrape from peer %d, while %d others are within their bursts, was not refused", maxScrapePeers+1, maxScrapePeers)
	}
}
