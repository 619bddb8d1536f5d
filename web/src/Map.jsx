// A Leaflet map over the city's own roads. Tiles are optional (VITE_TILE_URL at build time): these
// machines have no internet, and the platform must still show drivers, zones and roads without them.
import { useEffect, useRef, useState } from "react";
import L from "leaflet";

const TILE_URL = import.meta.env.VITE_TILE_URL || "";
let cityPromise = null;

function city() {
  cityPromise ??= fetch("/v1/city").then((r) => r.json());
  return cityPromise;
}

const ROAD_STYLE = (limit) =>
  limit >= 20 ? { color: "#f59e0b", weight: 4 } : limit >= 13 ? { color: "#94a3b8", weight: 3 } : { color: "#cbd5e1", weight: 1.5 };

// ``center`` ("lat,lon", from the page's ?center=) opens the map elsewhere than the demo city.
export function useLeaflet(onClick, center) {
  const ref = useRef(null);
  const [map, setMap] = useState(null);
  const click = useRef(onClick);
  click.current = onClick;
  useEffect(() => {
    const at = center ? center.split(",").map(Number) : [52.52, 13.405];
    const m = L.map(ref.current, { center: at, zoom: 14, zoomControl: true });
    if (TILE_URL) L.tileLayer(TILE_URL, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(m);
    m.on("click", (e) => click.current?.(e.latlng));
    let alive = true;
    city().then((c) => {
      if (!alive) return;
      const byClass = new Map();
      for (const [u, v, limit] of c.edges) {
        const k = limit >= 20 ? 2 : limit >= 13 ? 1 : 0;
        if (!byClass.has(k)) byClass.set(k, { limit, lines: [] });
        byClass.get(k).lines.push([c.nodes[u], c.nodes[v]]);
      }
      for (const k of [0, 1, 2]) {
        const cls = byClass.get(k);
        if (cls) L.polyline(cls.lines, { ...ROAD_STYLE(cls.limit), interactive: false, className: "road" }).addTo(m);
      }
    });
    setMap(m);
    return () => {
      alive = false;
      m.remove();
    };
  }, [center]);
  return [ref, map];
}

export const STATUS_COLOUR = { online: "#16a34a", busy: "#ea580c", offline: "#64748b" };

export function zoneLayer(z) {
  const style = { color: "#7c3aed", weight: 2, fillOpacity: 0.08, className: "zone" };
  const layer = z.circle
    ? L.circle([z.circle.center.lat, z.circle.center.lon], { ...style, radius: z.circle.radius_m })
    : L.polygon(z.polygon.map((p) => [p.lat, p.lon]), style);
  return layer.bindTooltip(z.name);
}

export function pin(latlng, label, colour) {
  return L.circleMarker(latlng, { radius: 8, color: "#0f172a", weight: 2, fillColor: colour, fillOpacity: 1 }).bindTooltip(label, {
    permanent: true,
    direction: "top",
  });
}
