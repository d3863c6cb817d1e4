# Wall time per setup, four panels; report.sh calls it with
#   data  file of rows: "label" big small p50 p95 conc ours ("-" = not run)
#   out   the PNG; big, small, conc: panel titles
set terminal pngcairo size 1500,1150 font "sans,10"
set output out
set datafile missing "-"
set style fill solid 0.85 border -1
set boxwidth 0.8
set xtics rotate by 40 right nomirror scale 0
set grid ytics
set key off
set bmargin 12
set lmargin 12
stats data using 0 nooutput
set xrange [-0.6:STATS_records - 0.4]
col(o) = (o > 0 ? 0x1f5fa8 : 0x9ec3e6)
set multiplot layout 2,2 title "rsync daemon protocol over loopback, wall time (lower is better; the shim as server and client darker)"
set title big." file"
set ylabel "s"
set yrange [0:*]
plot data using 0:2:(col($7)):xtic(1) with boxes lc rgb variable
set title small
plot data using 0:3:(col($7)):xtic(1) with boxes lc rgb variable
set title "module listing: p50 (bar), p95 (circle); log scale"
set ylabel "ms"
set logscale y
set yrange [1:*]
plot data using 0:4:(col($7)):xtic(1) with boxes lc rgb variable, '' using 0:5 with points pt 6 ps 1.2 lc rgb "black"
set title conc." listings started at once; log scale"
set ylabel "s"
set yrange [0.05:*]
plot data using 0:6:(col($7)):xtic(1) with boxes lc rgb variable
unset multiplot
