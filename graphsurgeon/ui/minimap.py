"""The minimap: an overview of the whole composite in the graph view's bottom-right corner, shown only while the view
does not show everything. The viewport is drawn as a rectangle on it; a click or a drag on it pans the view there.

Panning stays cheap because a scroll repaints only the strip it uncovers. A widget over the viewport spoils that:
as a sibling on top of it, every scroll step repaints the whole viewport (measured on Llama-3-70B's `model` view:
48 ms a pan step instead of 0.9 ms); as a child of the viewport it is moved with the scrolled pixels, and putting
it back in its corner widens the repainted area to the strip plus the minimap's column (~40 ms). So the minimap is a
child of the viewport that steps aside while the view is panned from elsewhere (the canvas dragged, the wheel, a
scroll bar) and comes back when the panning pauses; while it is the one being dragged it stays. The scene is
rendered into a pixmap only after it changes (debounced): showing the minimap is one small blit.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsView, QWidget

MAX_SIZE = QSize(240, 160)  # the overview's largest extent, in pixels
MARGIN = 12  # from the viewport's corner
RENDER_DELAY_MS = 60  # a burst of scene changes (a rebuild, a drag) renders the overview once
BACK_AFTER_MS = 250  # after the last scroll step of a pan that did not come from the minimap, it shows again


class Minimap(QWidget):
    def __init__(self, view: QGraphicsView) -> None:
        super().__init__(view.viewport())  # see the module docstring: a child of the viewport, kept in its corner
        self.view = view
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("overview: click or drag to move the view")
        self.setAttribute(Qt.WA_OpaquePaintEvent)  # paints every pixel: nothing under it repaints with it
        self._pixmap: QPixmap | None = None
        self._source = QRectF()  # the scene rectangle the pixmap shows
        self._scale = 1.0  # minimap pixels per scene unit
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RENDER_DELAY_MS)
        self._timer.timeout.connect(self.render_scene)
        self._away = QTimer(self)  # running while the view is panned from elsewhere: the minimap is hidden
        self._away.setSingleShot(True)
        self._away.setInterval(BACK_AFTER_MS)
        self._away.timeout.connect(self.sync)
        self._dragging = False  # the user pans with the minimap itself
        view.scene().changed.connect(self._scene_changed)
        for bar in (view.horizontalScrollBar(), view.verticalScrollBar()):
            bar.valueChanged.connect(self._scrolled)
            bar.rangeChanged.connect(self._scrolled)
        view.viewport().installEventFilter(self)
        self.hide()

    # ---- what it shows -------------------------------------------------------------------------------
    def _scene_changed(self, _regions=None) -> None:
        self._timer.start()

    def render_scene(self) -> None:
        """Render the whole composite into the overview pixmap (after the scene changed)."""
        scene = self.view.scene()
        source = scene.itemsBoundingRect().adjusted(-20, -20, 20, 20) if scene is not None else QRectF()
        if scene is None or scene.itemsBoundingRect().isEmpty():
            self._pixmap, self._source = None, QRectF()
            self.sync()
            return
        self._scale = min(MAX_SIZE.width() / source.width(), MAX_SIZE.height() / source.height())
        size = QSize(max(24, round(source.width() * self._scale)), max(24, round(source.height() * self._scale)))
        centre = source.center()  # the scene rectangle of exactly the pixmap's shape: pixels map back one to one
        source = QRectF(0, 0, size.width() / self._scale, size.height() / self._scale)
        source.moveCenter(centre)
        pixmap = QPixmap(size)
        pixmap.fill(QColor("#f8fafc"))
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.Antialiasing)
        blocker = scene.blockSignals(True)  # rendering must not count as a change of the scene
        try:
            scene.render(painter, QRectF(pixmap.rect()), source, Qt.KeepAspectRatio)
        finally:
            scene.blockSignals(blocker)
            painter.end()
        self._pixmap, self._source = pixmap, source
        self.resize(size)
        self.sync()

    def needed(self) -> bool:
        """True when the view does not show the whole composite."""
        scene = self.view.scene()
        items = scene.itemsBoundingRect() if scene is not None else QRectF()  # no scene: the window is closing
        if items.isEmpty():
            return False
        shown = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        return not shown.adjusted(-1, -1, 1, 1).contains(items)

    def viewport_rect(self) -> QRectF:
        """The part of the scene the view shows, in minimap pixels."""
        shown = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        return QRectF((shown.x() - self._source.x()) * self._scale, (shown.y() - self._source.y()) * self._scale,
                      shown.width() * self._scale, shown.height() * self._scale)

    def _scrolled(self, *_) -> None:
        if self._dragging:
            self.sync()
            return
        self.hide()  # panned from elsewhere: step aside until the panning pauses (see the module docstring)
        self._away.start()

    def sync(self, *_) -> None:
        """Show or hide, keep to the corner, redraw the viewport rectangle."""
        if self._away.isActive():
            return
        want = self.needed()
        if self._pixmap is None:  # not rendered yet: render first, then show
            self.hide()
            if want and not self._timer.isActive():
                self._timer.start()
            return
        self.setVisible(want)
        if want:
            vp = self.view.viewport().rect()
            self.move(vp.right() - self.width() - MARGIN, vp.bottom() - self.height() - MARGIN)
            self.raise_()
            self.update()

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Resize:
            self.sync()
        return False

    # ---- drawing and panning -------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        if self._pixmap is not None:
            p.drawPixmap(0, 0, self._pixmap)
        p.setPen(QPen(QColor("#2563eb"), 2))
        p.setBrush(QColor(37, 99, 235, 40))
        p.drawRect(self.viewport_rect().intersected(QRectF(self.rect()).adjusted(1, 1, -1, -1)))
        p.setPen(QPen(QColor("#64748b"), 1))
        p.setBrush(Qt.NoBrush)
        p.drawRect(self.rect().adjusted(0, 0, -1, -1))
        p.end()

    def scene_point(self, pos: QPointF) -> QPointF:
        """The scene point under a minimap position."""
        return QPointF(self._source.x() + pos.x() / self._scale, self._source.y() + pos.y() / self._scale)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self._dragging = True
            self.view.centerOn(self.scene_point(event.position()))
        event.accept()

    def mouseReleaseEvent(self, event) -> None:
        self._dragging = False
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.LeftButton:
            self.view.centerOn(self.scene_point(event.position()))
        event.accept()
