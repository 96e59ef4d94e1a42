# The runtime chart of docs/bench.md, drawn by bench/run_all.py (which writes the data file):
#   gnuplot -e "datafile='chart.dat'; outfile='bench-runtime.png'; ymin=0.25; ymax=16; xmax=60; \
#               subtitle='...'" bench/chart.gp
# For each workload and thread count, one bar per library: its median ns per operation divided
# by the best peer's median (so the best peer is at 1.0; log scale, lower is better), whiskers
# from min to max, karx's ratio printed above its bar, and a dashed line at karx's target.
# Data blocks (gnuplot indexes): 0 karx, 1 oneTBB, 2 Boost.Asio, 3 Go ("x value min max"),
# 4 targets ("x0 target width"), 5 thread-count tick labels ("x label"), 6 karx ÷ best peer
# above each group ("x y text"), 7 missing bars ("x text"), 8 workload tick labels ("x label").

if (!exists("datafile")) datafile = 'chart.dat'
if (!exists("outfile")) outfile = 'bench-runtime.png'
if (!exists("ymin")) ymin = 0.125
if (!exists("ymax")) ymax = 16
if (!exists("xmax")) xmax = 60
if (!exists("subtitle")) subtitle = ''

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1000,500 enhanced font "sans,10"
} else {
  set terminal png size 1000,500 enhanced font "sans,10"
}
set output outfile

set title "karx runtime workloads: median ns per operation ÷ the best peer's (log scale, lower is better);\nkarx ÷ best peer above each group, its target dashed\n{/*0.85 ".subtitle."}"
set logscale y 2
set yrange [ymin:ymax]
set xrange [-1:xmax]
set format y "%g"
set ytics nomirror
set ylabel "÷ best peer's median"
set grid ytics lc rgb "#dddddd"
set xtics nomirror scale 0 font ",9" noenhanced
set bmargin 4
set border 3
set key top left horizontal Left reverse samplen 1.5 width 1 box opaque
set style fill solid 0.85 border lc rgb "#555555"
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#777777" lw 1 back

w = 0.42   # half a bar's width
c_karx = "#d9480f"; c_tbb = "#1f77b4"; c_asio = "#6a9f3a"; c_go = "#00a7c4"

plot \
  datafile index 0 using 1:2:($1-w):($1+w):(ymin):2 with boxxyerror lc rgb c_karx title "karx", \
  ''       index 1 using 1:2:($1-w):($1+w):(ymin):2 with boxxyerror lc rgb c_tbb title "oneTBB", \
  ''       index 2 using 1:2:($1-w):($1+w):(ymin):2 with boxxyerror lc rgb c_asio title "Boost.Asio", \
  ''       index 3 using 1:2:($1-w):($1+w):(ymin):2 with boxxyerror lc rgb c_go title "Go", \
  ''       index 0 using 1:3:(0):($4-$3) with vectors heads size screen 0.004,90 lc rgb "#222222" notitle, \
  ''       index 1 using 1:3:(0):($4-$3) with vectors heads size screen 0.004,90 lc rgb "#222222" notitle, \
  ''       index 2 using 1:3:(0):($4-$3) with vectors heads size screen 0.004,90 lc rgb "#222222" notitle, \
  ''       index 3 using 1:3:(0):($4-$3) with vectors heads size screen 0.004,90 lc rgb "#222222" notitle, \
  ''       index 4 using 1:2:3:(0) with vectors nohead dt 2 lw 2 lc rgb "black" title "karx target", \
  ''       index 5 using 1:(NaN):xtic(2) notitle, \
  ''       index 8 using 1:(NaN):xtic(2) notitle, \
  ''       index 6 using 1:2:3 with labels noenhanced font ",10" tc rgb c_karx notitle, \
  ''       index 7 using 1:(ymin*1.1):2 with labels noenhanced rotate by 90 left font ",8" tc rgb "#777777" notitle
