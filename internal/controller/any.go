package controller

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// anyOf wraps a resource so its JSON carries "@type", as Envoy's
// config_dump does.
func anyOf(m proto.Message) proto.Message {
	a, err := anypb.New(m)
	if err != nil {
		return m
	}
	return a
}
