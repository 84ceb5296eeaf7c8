package main

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	switch os.Args[1] {
	case "http":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			var a []int
			_ = a[len(r.URL.Path)]
		})
		go http.ListenAndServe("127.0.0.1:18933", nil)
		time.Sleep(300 * time.Millisecond)
		http.Get("http://127.0.0.1:18933/a")
		http.Get("http://127.0.0.1:18933/abc")
	case "recovered":
		defer func() { panic(fmt.Sprintf("cleanup failed for job %d", 9)) }()
		panic("job 9 failed")
	case "fatal":
		m := map[int]int{}
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 1000000; j++ {
					m[j] = j
				}
			}()
		}
		wg.Wait()
	case "goroutine":
		done := make(chan bool)
		go func() { var p *struct{ n int }; fmt.Println(p.n); done <- true }()
		<-done
	}
}
