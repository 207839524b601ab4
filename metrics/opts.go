package metrics

import "github.com/prometheus/client_golang/prometheus"

// CounterOpts returns options for a threepidd counter called name.
func CounterOpts(name, help string) prometheus.CounterOpts {
	return prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}
}

// GaugeOpts returns options for a threepidd gauge called name.
func GaugeOpts(name, help string) prometheus.GaugeOpts {
	return prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}
}
