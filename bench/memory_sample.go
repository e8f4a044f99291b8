package main

// sample reads the child's VmRSS.
func (c *child) sample() {
	if c.exited() {
		return
	}
	rss, _, err := procMem(c.pid())
	if err != nil {
		return
	}
	c.mu.Lock()
	c.mem.MaxSampledRSS = max(c.mem.MaxSampledRSS, rss)
	c.mem.Samples++
	c.mu.Unlock()
}

// scrape reads the child's open objects/flows gauge and its heap in use.
func (c *child) scrape() {
	if c.exited() {
		return
	}
	raw, err := c.metrics()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	eachSample(raw, func(name string, x float64) {
		switch name {
		case heapInuse:
			c.mem.PeakHeap = max(c.mem.PeakHeap, int64(x))
		case c.gauge:
			c.mem.PeakGauge = max(c.mem.PeakGauge, x)
		}
	})
}
