# The wifi-secrets unit of modules/wifi.nix, before wpa_supplicant: fail
# with the reason and the fix when the Wi-Fi secrets file is missing or has
# no password (wpa_supplicant cannot start without it: its bind mount of the
# file fails), else hand the file to wpa_supplicant's group.
# Arguments: the secrets file, its own folder (or "" when it has none), the
# group to give it, the host's name, the network's SSID.
set -eu
file=$1
own_dir=$2
group=$3
host=$4
ssid=$5
fix="make the card again with \`cargo xtask sd $host\` (it asks for the password and writes the file), or write the line psk=<password> to $file (root, 0600) and run \`systemctl restart wpa_supplicant\`"
if [ ! -f "$file" ]; then
  echo "$file is missing, so wpa_supplicant cannot start and $host has no Wi-Fi: $fix" >&2
  exit 1
fi
if ! grep -q '^psk=' "$file"; then
  echo "$file has no psk= line, so wpa_supplicant cannot join \"$ssid\": $fix" >&2
  exit 1
fi
chown "root:$group" "$file"
chmod 0640 "$file"
if [ -n "$own_dir" ]; then
  chown "root:$group" "$own_dir"
  chmod 0750 "$own_dir"
fi
