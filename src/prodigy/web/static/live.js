// The live page: the server pushes the sections of the page that changed, as server-sent
// events; each replaces the section with the same id. Nothing else is fetched, and the page is
// never reloaded.
(() => {
  "use strict";
  const status = document.getElementById("live-status");
  const say = (text, state) => {
    status.textContent = text;
    status.dataset.state = state;
  };
  const generation = document.body.dataset.generation;
  const source = new EventSource("stream?generation=" + encodeURIComponent(generation));
  source.addEventListener("sections", (event) => {
    const sections = JSON.parse(event.data);
    for (const [id, html] of Object.entries(sections)) {
      const old = document.getElementById(id);
      if (old) {
        old.outerHTML = html;
      }
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  });
  source.addEventListener("open", () => say("live", "live"));
  source.addEventListener("error", () => say("reconnecting…", "lost"));
})();
