// Item page: start the player at the item's window and let transcript timestamps seek it.
const player = document.getElementById("player");
if (player) {
  const start = parseFloat(player.dataset.start || "0") || 0;
  const params = new URLSearchParams(location.search);
  const t = parseFloat(params.get("t") || "") || start;
  const seekTo = (sec) => {
    const go = () => { player.currentTime = sec; };
    if (player.readyState >= 1) go(); else player.addEventListener("loadedmetadata", go, { once: true });
  };
  if (t > 0) seekTo(t);
  const rows = [...document.querySelectorAll(".segments li")];
  document.querySelectorAll("button.seek").forEach((b) => {
    b.addEventListener("click", () => { seekTo(parseFloat(b.dataset.t)); player.play().catch(() => {}); });
  });
  document.querySelectorAll(".segments .word").forEach((w) => { // a word of the transcript: play from it
    w.addEventListener("click", () => { seekTo(parseFloat(w.dataset.t)); player.play().catch(() => {}); });
  });
  const highlight = () => { // the transcript line being played
    let current = null;
    rows.forEach((li) => {
      const s = parseFloat(li.querySelector("button.seek").dataset.t);
      if (s <= player.currentTime + 0.05) current = li;
    });
    rows.forEach((li) => li.classList.toggle("current", li === current));
  };
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);
}
const back = document.getElementById("back");
if (back && document.referrer && new URL(document.referrer).origin === location.origin && history.length > 1) {
  back.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
}
