module karx/bench/peers/go

go 1.19
