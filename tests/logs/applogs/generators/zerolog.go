// zerolog (JSON to stdout) as Go services use it: errors with .Err(), a stack with pkgerrors, a recovered
// panic logged with its stack, log.Panic() and log.Fatal().
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	pkgerrors "github.com/pkg/errors"
	"github.com/rs/zerolog"
	zlpkg "github.com/rs/zerolog/pkgerrors"
)

type item struct{ n int }

func handle(logger zerolog.Logger, id int) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Int("order", id).Msg("handler panicked")
		}
	}()
	var m map[string]*item
	fmt.Println(m["x"].n)
}

func main() {
	zerolog.ErrorStackMarshaler = zlpkg.MarshalStack
	logger := zerolog.New(os.Stdout).With().Timestamp().Logger()
	logger.Info().Int("port", 8080).Msg("started")
	for _, id := range []int{1, 2} {
		logger.Error().Err(fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", id)).Int("order", id).Msg("request failed")
	}
	logger.Warn().Msg("slow query 1234 ms")
	for _, id := range []int{7, 8} {
		logger.Error().Stack().Err(pkgerrors.Wrapf(errors.New("no owner"), "cart %d", id)).Msg("checkout failed")
	}
	logger.Error().Err(errors.New("sql: no rows in result set")).Send()
	handle(logger, 3)
	func() {
		defer func() { _ = recover() }()
		logger.Panic().Str("component", "billing").Msg("invoice 12 total is negative")
	}()
	logger.Fatal().Err(errors.New("listen tcp :8080: bind: address already in use")).Msg("cannot start")
}
