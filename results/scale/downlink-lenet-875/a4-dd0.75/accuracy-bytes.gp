set terminal pngcairo size 1000,650 noenhanced
set output "accuracy-bytes.png"
set title "Test accuracy against uplink bytes per agent per round"
set xlabel "uplink bytes per agent per round (log)"; set ylabel "test accuracy"
set logscale x
set yrange [0.9092:*]
set key outside right
set grid
plot "accuracy-bytes.dat" index 0 using 1:2 with linespoints pointtype 4 pointsize 1.3 title "esgd"
