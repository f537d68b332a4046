// The kitchen sink's web panel: proves a plugin's module loads and reaches the shell.
import { app, h } from "/static/web/app.js";

app.addPanel({
  id: "kitchen-sink",
  mount({ sidebar }) {
    sidebar.append(h("p", { id: "kitchen-sink-panel" }, "kitchen sink panel"));
  },
});
