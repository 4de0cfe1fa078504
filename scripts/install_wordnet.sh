#!/usr/bin/env bash
# Installs WordNet 3.0 for NLTK's METEOR into $1/corpora/wordnet (default: .venv/nltk_data).
# No pip package ships WordNet and the model hubs are unreachable, so the files come from
# Debian's wordnet-base and wordnet-sense-index packages, unpacked without installing them.
# NLTK wants real files (not symlinks) and a `lexnames` file, which Debian does not ship.
set -euo pipefail
dest="${1:-.venv/nltk_data}/corpora/wordnet"
if [ -s "$dest/lexnames" ] && [ -s "$dest/data.noun" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { (cd "$work" && apt-get download wordnet-base wordnet-sense-index >/dev/null 2>&1); }
if ! fetch; then
    echo "install_wordnet: package lists missing, running apt-get update" >&2
    apt-get update -qq >/dev/null
    fetch || { echo "install_wordnet: cannot download wordnet-base/wordnet-sense-index with apt-get" >&2; exit 1; }
fi
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
mkdir -p "$dest"
cp -L "$work"/root/usr/share/wordnet/* "$dest"/
# The 45 standard lexicographer files: number, name, syntactic category.
i=0
for entry in adj.all:3 adj.pert:3 adv.all:4 noun.Tops:1 noun.act:1 noun.animal:1 noun.artifact:1 \
    noun.attribute:1 noun.body:1 noun.cognition:1 noun.communication:1 noun.event:1 noun.feeling:1 \
    noun.food:1 noun.group:1 noun.location:1 noun.motive:1 noun.object:1 noun.person:1 \
    noun.phenomenon:1 noun.plant:1 noun.possession:1 noun.process:1 noun.quantity:1 noun.relation:1 \
    noun.shape:1 noun.state:1 noun.substance:1 noun.time:1 verb.body:2 verb.change:2 verb.cognition:2 \
    verb.communication:2 verb.competition:2 verb.consumption:2 verb.contact:2 verb.creation:2 \
    verb.emotion:2 verb.motion:2 verb.perception:2 verb.possession:2 verb.social:2 verb.stative:2 \
    verb.weather:2 adj.ppl:3; do
    printf '%02d\t%s\t%s\n' "$i" "${entry%%:*}" "${entry##*:}"
    i=$((i + 1))
done >"$dest/lexnames.tmp"
mv "$dest/lexnames.tmp" "$dest/lexnames"
echo "install_wordnet: WordNet 3.0 installed in $dest"
