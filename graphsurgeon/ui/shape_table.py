"""The shape table: every variable of the open composite — name · op · shape · example shape · dtype.

Sortable by any column (a third click on a header restores graph order), filtered by a text box (any column or the
fx name), and kept in step with the canvas selection by the window through `rows_selected` / `select_rows`.
Rows are addressed by their index in the view's `variables` list, whatever the sort or filter shows.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

COLUMNS = ("name", "op", "shape", "example", "dtype")
OP = COLUMNS.index("op")  # the column that stretches
ROW_ROLE = Qt.UserRole + 1  # the row's index in view.variables
SEARCH_ROLE = Qt.UserRole + 2  # lower-case text the filter matches: every column and the fx name
SORT_ROLE = Qt.UserRole + 3  # what a column sorts by (the example shape sorts by element count)


def example_numel(example: str) -> int:
    """Element count of an example shape text such as "[2, 10, 768]" (0 when it is not all numbers)."""
    n = 1
    for part in example.strip("[]").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            return 0
        n *= int(part)
    return n


class _Filter(QSortFilterProxyModel):
    """Keeps rows whose search text holds every word typed (case-insensitive)."""

    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> None:
        self.words = text.lower().split()
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:
        text = self.sourceModel().index(row, 0, parent).data(SEARCH_ROLE) or ""
        return all(w in text for w in self.words)


class ShapeTable(QWidget):
    rows_selected = Signal(list)  # indices into view.variables, after the user changed the selection

    def __init__(self) -> None:
        super().__init__()
        self.model = QStandardItemModel(0, len(COLUMNS))
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.proxy = _Filter()
        self.proxy.setSourceModel(self.model)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("filter: name, op, shape, dtype …")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.set_text)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.view.setSortingEnabled(True)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)  # compact rows: more shown
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setSortIndicatorClearable(True)  # asc → desc → graph order
        header.setSortIndicator(-1, Qt.AscendingOrder)
        # set once, never reset by a refill (an edit keeps the stretch): every column as wide as its text, the op
        # column (the longest texts, "Scaled dot-product attention (attention_interface())") takes what is left
        for c in range(len(COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.Stretch if c == OP else QHeaderView.ResizeToContents)
        self.view.selectionModel().selectionChanged.connect(self._user_selection)
        self._syncing = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.filter)
        lay.addWidget(self.view)

    # ---- contents ------------------------------------------------------------------------------
    def fill(self, rows) -> None:
        """Show `rows` (VariableRow, in graph order); the sort, the filter and the column sizing stay as they were."""
        self._syncing = True
        self.model.removeRows(0, self.model.rowCount())
        for i, v in enumerate(rows):
            fx = v.value or v.name  # the fx node name, shown in the tooltip
            texts = (v.name, v.producer, v.shape, v.example_shape, v.dtype)
            items = []
            for c, text in enumerate(texts):
                it = QStandardItem(text)
                it.setData(i, ROW_ROLE)
                it.setData(example_numel(text) if c == 3 else text.lower(), SORT_ROLE)
                items.append(it)
            step = f"\n{v.step}" if getattr(v, "step", "") else ""  # which binding of a rebound name
            items[0].setToolTip(f"{v.name}\nfx node: {fx}{step}")
            items[0].setData(" ".join((*texts, fx)).lower(), SEARCH_ROLE)
            self.model.appendRow(items)
        self._syncing = False

    def rowCount(self) -> int:
        """Rows of the view (shown or filtered out)."""
        return self.model.rowCount()

    def shown(self) -> list[list[str]]:
        """The rows as displayed: sorted and filtered, each as its column texts."""
        p = self.proxy
        return [[p.index(r, c).data() for c in range(len(COLUMNS))] for r in range(p.rowCount())]

    # ---- selection ---------------------------------------------------------------------------
    def selected_rows(self) -> list[int]:
        rows = {self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows()}
        return sorted(int(self.model.item(r, 0).data(ROW_ROLE)) for r in rows)

    def select_rows(self, rows) -> None:
        """Select these view rows (those the filter hides stay unselected) without emitting rows_selected."""
        wanted = set(rows)
        selection = QItemSelection()
        for r in range(self.model.rowCount()):
            if self.model.item(r, 0).data(ROW_ROLE) in wanted:
                idx = self.proxy.mapFromSource(self.model.index(r, 0))
                if idx.isValid():
                    selection.select(idx, idx.siblingAtColumn(len(COLUMNS) - 1))
        self._syncing = True
        self.view.selectionModel().select(selection, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self._syncing = False
        if not selection.isEmpty():
            self.view.scrollTo(selection.indexes()[0])

    def select_row(self, row: int) -> None:
        """Select one view row as a user's click would (emits rows_selected)."""
        for r in range(self.model.rowCount()):
            if self.model.item(r, 0).data(ROW_ROLE) == row:
                self.view.selectRow(self.proxy.mapFromSource(self.model.index(r, 0)).row())
                return

    def clear_selection(self) -> None:
        self.view.clearSelection()

    def _user_selection(self, *_) -> None:
        if not self._syncing:
            self.rows_selected.emit(self.selected_rows())
