// Go 1.19 runtime and standard library output of a small API (stderr): run as a built binary, as deployed.
// Modes: logfatal (log.Printf then log.Fatalf), deadlock, slice, structpanic, errpanic, httperr, slog.
package main

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/exp/slog"
)

type Order struct {
	ID    int
	Total float64
}

type NotFoundError struct {
	Kind string
	ID   int
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %d not found", e.Kind, e.ID) }

func find(id int) (*Order, error) {
	return nil, &NotFoundError{"order", id}
}

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	switch os.Args[1] {
	case "logfatal":
		log.Printf("listening on :%d", 8080+n)
		log.Printf("request %d failed: %v", n, fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", n))
		log.Printf("ERROR: payment %d declined: card expired", n)
		log.Fatalf("cannot open database: %v", errors.New("pq: password authentication failed for user \"app\""))
	case "deadlock":
		jobs := make(chan int)
		results := make(chan int)
		go func() {
			for j := range jobs {
				results <- j * n
			}
		}()
		jobs <- 1
		jobs <- 2 // the worker waits on results, nobody reads them
		fmt.Println(<-results)
	case "slice":
		s := make([]byte, 3, 3+n)
		i := 5 + n
		fmt.Println(s[:i])
	case "structpanic":
		panic(Order{ID: n, Total: 9.5})
	case "errpanic":
		o, err := find(n)
		if err != nil {
			panic(err)
		}
		fmt.Println(o)
	case "httperr":
		http.HandleFunc("/orders/", func(w http.ResponseWriter, r *http.Request) {
			id, _ := strconv.Atoi(r.URL.Path[len("/orders/"):])
			if _, err := find(id); err != nil {
				panic(err)
			}
		})
		go http.ListenAndServe("127.0.0.1:"+strconv.Itoa(18940+n), nil)
		time.Sleep(300 * time.Millisecond)
		http.Get(fmt.Sprintf("http://127.0.0.1:%d/orders/%d", 18940+n, 10+n))
		time.Sleep(100 * time.Millisecond)
	case "slog":
		l := slog.New(slog.NewJSONHandler(os.Stdout))
		l.Info("started", "port", 8080)
		l.Error("request failed", fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", n), "order", n)
		_, err := find(n)
		l.Error("checkout failed", err, "user", 100+n)
		l.Warn("slow query", "ms", 1200+n)
		l.Log(slog.ErrorLevel, "payment declined", "error", fmt.Sprintf("card %d expired", 4000+n))
	}
}
