# frontier.gp — plots the frontier written by scripts/frontier.sh.
# Inputs: dir (holding keepalive.dat, hybrid.dat, predictive.dat, oracle.dat: columns waste_norm,
# p75 cold-start %, label) and out (the PNG path).
set terminal pngcairo size 1100,700 font ",11"
set output out
set title "Cold starts vs wasted memory (prewarm-replay, pool mode)"
set xlabel "wasted memory (keepalive:10m = 100)"
set ylabel "per-function cold-start %, 75th percentile"
set grid
set key top left box opaque
set logscale x
set xrange [0.5:*]
set yrange [-2:*]
set pointsize 1.6
plot dir."/keepalive.dat" using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "keep-alive 1-120 min", \
     "" using 1:2:3 with labels offset 0,1 font ",9" notitle, \
     dir."/hybrid.dat" using 1:2 with points pt 9 ps 2.2 lc rgb "#d62728" title "hybrid histogram", \
     dir."/predictive_q.dat" using 1:2 with linespoints lw 2 pt 5 lc rgb "#2ca02c" title "predictive, quantile 0.95-0.999", \
     "" using 1:2:3 with labels offset 3,0.8 font ",9" notitle, \
     dir."/predictive_k.dat" using 1:2 with linespoints lw 2 pt 4 lc rgb "#9467bd" title "predictive, keep-one cost 0.001-0.00005", \
     "" using 1:2:3 with labels offset -7,0 font ",9" notitle, \
     dir."/oracle.dat" using 1:2 with points pt 13 ps 2.2 lc rgb "#000000" title "oracle (lower bound)"
