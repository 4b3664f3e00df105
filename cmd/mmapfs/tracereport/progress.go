package tracereport

import "fmt"

// Progress is the line a trace prints on a terminal every second:
// "events N, dropped M, requests K" (dropped: the kernel's lost events,
// which the caller counts; plus the daemon's, from the Collector).
func Progress(c *Collector, kernelDropped uint64) string {
	events, requests, _ := c.Counts()
	c.mu.Lock()
	daemon := c.stats.daemonLost
	c.mu.Unlock()
	return FormatProgress(events, kernelDropped+daemon, requests)
}

// FormatProgress formats a progress line from its counts.
func FormatProgress(events, dropped, requests uint64) string {
	return fmt.Sprintf("events %d, dropped %d, requests %d", events, dropped, requests)
}
