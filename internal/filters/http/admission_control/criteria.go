package admission_control

import (
	acv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/admission_control/v3"

	"github.com/legateproxy/legate/internal/config"
)

// httpRange is a success range of HTTP status codes, [start, end).
type httpRange struct{ start, end int }

// evaluator is a compiled SuccessCriteria (Envoy's
// SuccessCriteriaEvaluator).
type evaluator struct {
	http []httpRange
	grpc map[uint32]bool
}

// defaultGRPCSuccess are the codes Envoy counts as successes when
// grpc_criteria is unset: those sending less traffic would not change.
var defaultGRPCSuccess = []uint32{
	0,  // OK
	1,  // CANCELLED
	2,  // UNKNOWN
	3,  // INVALID_ARGUMENT
	5,  // NOT_FOUND
	6,  // ALREADY_EXISTS
	7,  // PERMISSION_DENIED
	9,  // FAILED_PRECONDITION
	11, // OUT_OF_RANGE
	12, // UNIMPLEMENTED
	16, // UNAUTHENTICATED
}

func compileCriteria(sc *acv3.AdmissionControl_SuccessCriteria, path string) (evaluator, error) {
	var e evaluator
	if err := config.CheckFields(sc, path, "http_criteria", "grpc_criteria"); err != nil {
		return e, err
	}
	if hc := sc.GetHttpCriteria(); hc != nil {
		p := config.Join(path, "http_criteria")
		if err := config.CheckFields(hc, p, "http_success_status"); err != nil {
			return e, err
		}
		for i, r := range hc.GetHttpSuccessStatus() {
			s, en := int(r.GetStart()), int(r.GetEnd())
			// Envoy's validHttpRange: 100 <= start <= end <= 600 (an empty
			// range, such as the docs' [404, 404), is accepted).
			if s < 100 || s >= 600 || en < 100 || en > 600 || s > en {
				return e, config.Errorf(config.Index(config.Join(p, "http_success_status"), i),
					"invalid HTTP range: [%d, %d): give 100 <= start <= end <= 600", s, en)
			}
			e.http = append(e.http, httpRange{s, en})
		}
	} else {
		// Every non-5xx status is a success.
		e.http = []httpRange{{0, 500}}
	}
	e.grpc = map[uint32]bool{}
	if gc := sc.GetGrpcCriteria(); gc != nil {
		p := config.Join(path, "grpc_criteria")
		if err := config.CheckFields(gc, p, "grpc_success_status"); err != nil {
			return e, err
		}
		for i, c := range gc.GetGrpcSuccessStatus() {
			if c > 16 {
				return e, config.Errorf(config.Index(config.Join(p, "grpc_success_status"), i), "invalid gRPC code %d: codes are 0-16", c)
			}
			e.grpc[c] = true
		}
	} else {
		for _, c := range defaultGRPCSuccess {
			e.grpc[c] = true
		}
	}
	return e, nil
}

func (e evaluator) httpSuccess(status int) bool {
	for _, r := range e.http {
		if status >= r.start && status < r.end {
			return true
		}
	}
	return false
}

func (e evaluator) grpcSuccess(code uint32) bool { return e.grpc[code] }
