package upstream

import (
	"log/slog"
	"os"
	"sync"
	"time"

	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// OutlierEventLog writes cluster_manager.outlier_detection.event_log_path:
// one envoy.data.cluster.v3.OutlierDetectionEvent per line, in proto JSON,
// for every ejection (enforced or only detected) and return, as Envoy's
// outlier detection event logger. Safe for concurrent use.
type OutlierEventLog struct {
	path string
	log  *slog.Logger
	once sync.Once
	// lines go to the writer goroutine: an event is noted under the
	// detector's lock on a request's path, and a slow file (a pipe on
	// /dev/stdout) must not stall either. Full: the event is dropped.
	lines chan []byte
}

// NewOutlierEventLog logs to the file at path (appended to; "/dev/stdout"
// works as in Envoy), opened when the first event comes.
func NewOutlierEventLog(path string, log *slog.Logger) *OutlierEventLog {
	return &OutlierEventLog{path: path, log: log, lines: make(chan []byte, 1024)}
}

func (l *OutlierEventLog) write(b []byte) {
	l.once.Do(func() { go l.run() })
	select {
	case l.lines <- b:
	default:
		l.log.Debug("outlier detection event log is behind; event dropped", "path", l.path)
	}
}

// run opens the file and writes the events; it lives as long as the
// process, as the file does.
func (l *OutlierEventLog) run() {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		// Once: the events are lost, the proxy goes on.
		l.log.Error("outlier detection event log cannot be opened", "path", l.path, "error", err)
		for range l.lines {
		}
		return
	}
	for b := range l.lines {
		f.Write(b)
	}
}

var ejectionTypes = map[string]datav3.OutlierEjectionType{
	"consecutive_5xx":                  datav3.OutlierEjectionType_CONSECUTIVE_5XX,
	"consecutive_gateway_failure":      datav3.OutlierEjectionType_CONSECUTIVE_GATEWAY_FAILURE,
	"consecutive_local_origin_failure": datav3.OutlierEjectionType_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
	"success_rate":                     datav3.OutlierEjectionType_SUCCESS_RATE,
	"local_origin_success_rate":        datav3.OutlierEjectionType_SUCCESS_RATE_LOCAL_ORIGIN,
	"failure_percentage":               datav3.OutlierEjectionType_FAILURE_PERCENTAGE,
	"failure_percentage_local_origin":  datav3.OutlierEjectionType_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
}

// outlierEvent is what the detector knows of one event.
type outlierEvent struct {
	kind     string // an outlierKinds entry; "" for a return (UNEJECT)
	enforced bool
	// For the success-rate and failure-percentage detectors: the host's
	// rate and the cluster's average and threshold (percent).
	hostRate, clusterAvg, threshold float64
}

// log writes one event for h (s is its state, od.mu held).
func (od *outlierDetector) logEvent(h *Host, s *outlierHost, ev outlierEvent) {
	l := od.c.eventLog
	if l == nil {
		return
	}
	now := od.now()
	e := &datav3.OutlierDetectionEvent{
		Timestamp:    timestamppb.New(now),
		ClusterName:  od.c.Name,
		UpstreamUrl:  h.Address,
		NumEjections: s.numEjection,
		Enforced:     ev.enforced,
		Action:       datav3.Action_EJECT,
	}
	if !s.lastAction.IsZero() {
		e.SecsSinceLastAction = wrapperspb.UInt64(uint64(now.Sub(s.lastAction) / time.Second))
	}
	if ev.kind == "" {
		e.Action = datav3.Action_UNEJECT
		e.Enforced = true
		e.Type = datav3.OutlierEjectionType_CONSECUTIVE_5XX
		if s.lastKind != "" {
			e.Type = ejectionTypes[s.lastKind]
		}
	} else {
		e.Type = ejectionTypes[ev.kind]
		switch ev.kind {
		case "success_rate", "local_origin_success_rate":
			e.Event = &datav3.OutlierDetectionEvent_EjectSuccessRateEvent{EjectSuccessRateEvent: &datav3.OutlierEjectSuccessRate{
				HostSuccessRate: uint32(ev.hostRate), ClusterAverageSuccessRate: uint32(ev.clusterAvg),
				ClusterSuccessRateEjectionThreshold: uint32(ev.threshold)}}
		case "failure_percentage", "failure_percentage_local_origin":
			e.Event = &datav3.OutlierDetectionEvent_EjectFailurePercentageEvent{EjectFailurePercentageEvent: &datav3.OutlierEjectFailurePercentage{
				HostSuccessRate: uint32(ev.hostRate)}}
		default:
			e.Event = &datav3.OutlierDetectionEvent_EjectConsecutiveEvent{EjectConsecutiveEvent: &datav3.OutlierEjectConsecutive{}}
		}
	}
	if ev.enforced || ev.kind == "" {
		s.lastAction = now
	}
	// Proto field names and primitive defaults printed, as Envoy's event
	// logger (getJsonStringFromMessage with always_print_primitive_fields).
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(e)
	if err != nil {
		return
	}
	l.write(append(b, '\n'))
}
