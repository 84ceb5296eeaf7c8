// Rust panics as the standard library prints them (stderr): unwrap() of None, expect() of an Err, an index out of
// bounds, a panic!() in a named thread; a log line before each, as a program's own logging writes it.
// rustc -O rust_panics.rs; for K in unwrap expect index thread; do for N in 1 2; do env -u RUST_BACKTRACE
// ./rust_panics $K $N; done; done >> FILE 2>&1; RUST_BACKTRACE=1 ./rust_panics unwrap 3 >> FILE 2>&1
use std::collections::HashMap;

fn find(m: &HashMap<u32, &str>, id: u32) -> String {
    m.get(&id).unwrap().to_string()
}

fn main() {
    let kind = std::env::args().nth(1).unwrap();
    let n: u32 = std::env::args().nth(2).unwrap().parse().unwrap();
    eprintln!("2026-12-07T10:00:0{}.000000Z  INFO shop: handling order {}", n, n);
    let m: HashMap<u32, &str> = HashMap::new();
    match kind.as_str() {
        "unwrap" => {
            find(&m, n);
        }
        "expect" => {
            let r: Result<u32, std::num::ParseIntError> = format!("x{}", n).parse();
            r.expect("order id must be a number");
        }
        "index" => {
            let v = vec![1, 2, 3];
            let i = n as usize + 5;
            println!("{}", v[i]);
        }
        "thread" => {
            let h = std::thread::Builder::new().name("worker-1".into());
            h.spawn(move || panic!("order {} has no lines", n)).unwrap().join().ok();
        }
        _ => {}
    }
}
