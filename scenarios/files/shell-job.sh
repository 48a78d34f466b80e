# kmaplab: a script busybox sh runs (scenarios/shell.toml)
n=0
for f in /data/f1 /data/f2 /data/f3 /data/f4; do
    cp $f /out/copy$n
    n=$((n + 1))
done
sha256sum /out/copy0 /out/copy3
cat /out/copy1 /out/copy2 | wc -c
echo "script: $n files copied"
